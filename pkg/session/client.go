package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

const (
	// reportExitAttempts bounds ReportExit's retries; each attempt waits
	// at most reportExitTimeout for the gateway.
	reportExitAttempts = 5
	reportExitTimeout  = 5 * time.Second
	// maxConcurrentExecs bounds the execs one session runs at a time.
	maxConcurrentExecs = 64
	// minHeartbeatInterval keeps a gateway's odd interval from making the
	// supervisor spin.
	minHeartbeatInterval = time.Millisecond
)

// ClientConfig configures the supervisor side of the session.
type ClientConfig struct {
	// Target is where the gateway listens: unix:///path, vsock://CID:PORT,
	// tcp://host:port or tls://host:port.
	Target     string
	SandboxID  string
	InstanceID string
	Version    string
	// Source holds the supervisor's token; the client offers it every
	// token the gateway sends and puts its current token on every call.
	Source TokenSource
	// Exec runs exec requests; CommandRunner{} when nil.
	Exec    ExecHandler
	Backoff Backoff
	// HelloTimeout is how long to wait for the gateway's answer to the
	// Hello; DefaultHelloTimeout when zero.
	HelloTimeout time.Duration
	Logger       *zap.Logger // zap.NewNop() when nil; should name the sandbox, the client does not
	// Now is the client's clock: it judges the gateway's silence and when
	// a session lasted long enough to reset the backoff; time.Now when nil.
	Now         func() time.Time
	DialOptions []DialOption
	// Watcher is the process's shared inotify instance (see dirwatch),
	// used on a unix target to learn at once that the gateway's socket
	// was made again. When nil, Run makes one of its own.
	Watcher *dirwatch.Watcher
	// SocketPollInterval is how often a unix target's socket is looked at
	// during a backoff when its directory cannot be watched;
	// DefaultSocketPollInterval when zero.
	SocketPollInterval time.Duration
}

// DefaultSocketPollInterval is how often the gateway's socket is looked
// at during a backoff without inotify: a stat is cheap, and a restarted
// gateway is then reached within it rather than at the end of a backoff
// of up to 30 s.
const DefaultSocketPollInterval = 250 * time.Millisecond

// Client is the supervisor side of the session: it keeps one session
// with the gateway, feeds every token it receives to its source, runs
// exec requests and reports the workload's exit.
type Client struct {
	cfg  ClientConfig
	log  *zap.Logger
	conn *grpc.ClientConn
	rpc  sessionpb.SupervisorSessionClient

	running atomic.Bool // Run is not reentrant
	// dialed is the socket a unix target's last dial found (nil before
	// the first): a backoff ends early only for another one.
	dialed atomic.Pointer[socketIdentity]
	// dials numbers the connection's dials; dialEnded holds the outcome
	// of the latest one to end.
	dials     atomic.Uint64
	dialEnded chan dialOutcome

	// unknown is set when the gateway said it knows the sandbox no more
	// (deleted), and cleared by the next accepted session.
	unknown atomic.Bool

	mu        sync.Mutex
	connected bool
	sessionID string
	lastErr   error
	changes   chan struct{} // signalled when connected changes
}

// NewClient checks cfg and prepares the connection (made lazily by Run).
// Close it after Run has returned.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.SandboxID == "" {
		return nil, errors.New("new session client: empty sandbox id")
	}
	if cfg.Source == nil {
		return nil, fmt.Errorf("new session client for %s: no token source", cfg.SandboxID)
	}
	if cfg.Exec == nil {
		cfg.Exec = CommandRunner{}
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SocketPollInterval <= 0 {
		cfg.SocketPollInterval = DefaultSocketPollInterval
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	c := &Client{
		cfg: cfg,
		// The caller's logger names the sandbox already (the supervisor's
		// root logger does): adding it here would repeat the key.
		log:       cfg.Logger.With(zap.String("target", cfg.Target)),
		changes:   make(chan struct{}, 1),
		dialEnded: make(chan dialOutcome, 1),
	}
	creds := &callCredentials{source: cfg.Source, inner: cfg.Source.PerRPCCredentials(), sandboxID: cfg.SandboxID}
	opts := append([]DialOption{WithGRPCOptions(grpc.WithPerRPCCredentials(creds))}, cfg.DialOptions...)
	var socket string
	if t, err := ParseTarget(cfg.Target); err == nil && t.Scheme == SchemeUnix {
		socket = t.Path
	}
	opts = append(opts, withDialObserver(c.beforeDial(socket), c.afterDial))
	conn, err := Dial(context.Background(), cfg.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("new session client for %s: %w", cfg.SandboxID, err)
	}
	c.conn, c.rpc = conn, sessionpb.NewSupervisorSessionClient(conn)
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// State reports whether a session is established, its id, and the error
// that ended the last session or attempt.
func (c *Client) State() (connected bool, sessionID string, lastErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.sessionID, c.lastErr
}

// Changes is signalled whenever the session comes up or goes down. It
// holds one signal: read State for what is true now.
func (c *Client) Changes() <-chan struct{} { return c.changes }

func (c *Client) setState(connected bool, sessionID string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.connected != connected
	c.connected, c.sessionID = connected, sessionID
	if err != nil {
		c.lastErr = err
	}
	if changed {
		select {
		case c.changes <- struct{}{}:
		default:
		}
	}
}

// Run keeps a session with the gateway until ctx ends, reconnecting with
// exponential backoff and full jitter, reset once a session has stayed up
// for Backoff.ResetAfter. It returns nil when ctx ends. Run may be called
// again after it returned, never concurrently.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return fmt.Errorf("run session of %s: already running", c.cfg.SandboxID)
	}
	defer c.running.Store(false)
	sock := c.watchSocket()
	defer sock.close()
	attempt := 0
	for {
		// The loop owns the backoff: gRPC's own reconnect backoff (up to
		// two minutes) would otherwise fail this attempt fast, unseen, on
		// the error of an older dial. So dial afresh and await the outcome.
		c.dialNow(ctx, dialOutcomeTimeout)
		presented := c.cfg.Source.Current()
		acceptedAt, err := c.runSession(ctx)
		before := c.lastDialed() // the socket this attempt dialled
		// What the gateway last saw: the token a refused attempt
		// presented, or the newest one a session ran with.
		held := presented
		if !acceptedAt.IsZero() {
			held = c.cfg.Source.Current()
		}
		c.setState(false, "", err)
		if ctx.Err() != nil {
			return nil
		}
		if !acceptedAt.IsZero() && c.cfg.Now().Sub(acceptedAt) >= c.cfg.Backoff.ResetAfter {
			attempt = 0
		}
		delay := c.cfg.Backoff.Delay(attempt, rand.Float64())
		attempt++
		c.log.Info("session ended; reconnecting", zap.Error(err), zap.Duration("delay", delay))
		if c.sleepOrWake(ctx, delay, sock, before, held) {
			attempt = 0 // a gateway just came up: start the backoff afresh
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// dialOutcomeTimeout bounds how long an attempt waits for its dial's
// outcome before it tries anyway.
const dialOutcomeTimeout = 2 * time.Second

// dialOutcome is how dial number seq ended.
type dialOutcome struct {
	seq uint64
	err error
}

// beforeDial returns the hook run before each dial: it numbers the dial
// and records which socket (when the target is one) it is about to find.
func (c *Client) beforeDial(socket string) func() uint64 {
	return func() uint64 {
		if socket != "" {
			id := socketIdentityOf(socket)
			c.dialed.Store(&id)
		}
		return c.dials.Add(1)
	}
}

// afterDial publishes a dial's outcome; newest wins.
func (c *Client) afterDial(seq uint64, err error) {
	select {
	case <-c.dialEnded:
	default:
	}
	select {
	case c.dialEnded <- dialOutcome{seq: seq, err: err}:
	default:
	}
}

// dialNow has the connection dial now, unless it is ready, and waits (at
// most limit) until it is ready or a dial begun now has failed. An attempt
// then never fails on an older dial's error (gRPC keeps reporting the last
// failure until a connection is ready), which would tell a socket that
// appeared since for the one that failed.
func (c *Client) dialNow(ctx context.Context, limit time.Duration) {
	if c.conn.GetState() == connectivity.Ready {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ready := make(chan struct{})
	wg.Go(func() {
		for st := c.conn.GetState(); st != connectivity.Ready; st = c.conn.GetState() {
			if st == connectivity.Shutdown || !c.conn.WaitForStateChange(ctx, st) {
				return
			}
		}
		close(ready)
	})
	since := c.dials.Load()
	c.conn.ResetConnectBackoff()
	c.conn.Connect()
	for {
		select {
		case <-ready:
			return
		case <-ctx.Done():
			return
		case o := <-c.dialEnded:
			switch {
			case o.seq <= since && o.err != nil:
				// A dial begun before this one failed: dial again.
				c.conn.ResetConnectBackoff()
				c.conn.Connect()
			case o.seq > since && o.err != nil:
				return // the attempt fails on this dial's error
			}
			// Dialled: the connection is ready once its handshake is done.
		}
	}
}

// lastDialed is the socket the connection's last dial found.
func (c *Client) lastDialed() socketIdentity {
	if id := c.dialed.Load(); id != nil {
		return *id
	}
	return socketIdentity{}
}

// gatewaySocket is a unix target's socket, and the watch of its
// directory that tells when it is made again; both zero on other targets.
type gatewaySocket struct {
	path  string
	watch *dirwatch.Watch
	owned *dirwatch.Watcher // the watcher Run made, when none was given
}

// socketIdentity tells one socket file from another made at the same
// path: a file system may give the new one the old one's inode number,
// never (short of a clock step) its change time as well.
type socketIdentity struct {
	exists   bool
	dev, ino uint64
	ctime    syscall.Timespec
}

// watchSocket starts watching the socket's directory, for all of Run: a
// socket made between a failed attempt and the backoff is then not missed.
func (c *Client) watchSocket() gatewaySocket {
	t, err := ParseTarget(c.cfg.Target)
	if err != nil || t.Scheme != SchemeUnix {
		return gatewaySocket{}
	}
	s := gatewaySocket{path: t.Path}
	w := c.cfg.Watcher
	if w == nil {
		w = dirwatch.New(c.log)
		s.owned = w
		if err := w.Err(); err != nil {
			c.log.Warn("cannot watch the gateway socket's directory; polling it during backoff",
				zap.String("socket", t.Path), zap.Duration("interval", c.cfg.SocketPollInterval), zap.Error(err))
		}
	}
	name := filepath.Base(t.Path)
	s.watch = w.Watch(filepath.Dir(t.Path), func(n string) bool { return n == name })
	return s
}

func (s gatewaySocket) close() {
	if s.watch != nil {
		s.watch.Close()
	}
	if s.owned != nil {
		s.owned.Close()
	}
}

// identity returns which socket file is at the path now.
func (s gatewaySocket) identity() socketIdentity {
	if s.path == "" {
		return socketIdentity{}
	}
	return socketIdentityOf(s.path)
}

func socketIdentityOf(path string) socketIdentity {
	fi, err := os.Stat(path)
	if err != nil {
		return socketIdentity{}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return socketIdentity{exists: true}
	}
	return socketIdentity{exists: true, dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim}
}

// sleepOrWake waits out a backoff delay, or less. On a unix target it
// returns as soon as a socket other than the one the failed attempt
// dialled (before) is at the path, so that a restarted gateway is reached at
// once rather than at the end of a backoff that grew while it was down.
// It learns of the new socket from the directory's watch, or, where
// inotify is not available, by looking every SocketPollInterval. The
// same socket as before never wakes it: a gateway that refused the
// session is not asked again before the backoff ends. It also returns as
// soon as the source holds a token other than held (what the gateway last
// saw), taken from the directory for instance: a gateway that writes
// tokens is up, and the new token may be what it refused the old one for.
// It reports whether it was woken.
func (c *Client) sleepOrWake(ctx context.Context, delay time.Duration, sock gatewaySocket, before socketIdentity, held *auth.Token) bool {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	tokens, unsubscribe := c.tokenArrivals()
	defer unsubscribe()
	newToken := func(tok *auth.Token) bool {
		if tok == held {
			return false
		}
		c.log.Info("new token taken; reconnecting now", zap.Stringer("token", tok))
		return true
	}
	woken := func() bool {
		now := sock.identity()
		if !now.exists || now == before {
			return false
		}
		c.log.Info("gateway socket created; reconnecting now", zap.String("socket", sock.path))
		return true
	}
	// Unwatched (no inotify, or the directory gone), the socket is polled.
	var watched <-chan struct{}
	var poll <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	pollUnlessWatched := func() {
		if ticker == nil && !sock.watch.Active() {
			ticker = time.NewTicker(c.cfg.SocketPollInterval)
			poll = ticker.C
		}
	}
	if sock.watch != nil { // a unix target
		watched = sock.watch.C()
		pollUnlessWatched()
		// The socket may have been made since the attempt, before the wait.
		if woken() {
			return true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-watched:
			if woken() {
				return true
			}
			pollUnlessWatched() // the signal may say the directory went away
		case <-poll:
			if woken() {
				return true
			}
		case tok, ok := <-tokens:
			if !ok {
				tokens = nil
				continue
			}
			if newToken(tok) {
				return true
			}
		}
	}
}

// tokenNotifier is a TokenSource that tells of every token it accepts
// (pkg/auth/source does): Subscribe's channel gets the current token
// first, then each new one.
type tokenNotifier interface {
	Subscribe() (<-chan *auth.Token, func())
}

// tokenArrivals subscribes to the source's new tokens, if it tells of
// them; a nil channel otherwise.
func (c *Client) tokenArrivals() (<-chan *auth.Token, func()) {
	if n, ok := c.cfg.Source.(tokenNotifier); ok {
		return n.Subscribe()
	}
	return nil, func() {}
}

// RejectedError is the gateway's refusal of a session, or its reason to
// end one.
type RejectedError struct {
	Code   sessionpb.RejectCode
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("gateway rejected the session: %s: %s", codeLabel(e.Code), e.Reason)
}

// ErrHeartbeatTimeout ends a session whose gateway went silent.
var ErrHeartbeatTimeout = errors.New("no message from the gateway for three heartbeat intervals")

// runSession runs one session: Hello, then the loop. It returns when the
// session was accepted (zero if it never was) and why it ended.
func (c *Client) runSession(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the reader and the execs stop with ctx
	defer cancel()

	stream, err := c.rpc.Connect(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("open session: %w", err)
	}
	conn := receive(ctx, &wg, stream)
	var held uint64
	if cur := c.cfg.Source.Current(); cur != nil {
		held = cur.Gen()
	}
	acc, err := c.hello(ctx, conn, held)
	if err != nil {
		return time.Time{}, err
	}
	acceptedAt := c.cfg.Now()
	c.unknown.Store(false)
	c.setState(true, acc.GetSessionId(), nil)
	log := c.log.With(zap.String("session", acc.GetSessionId()))
	log.Info("session accepted", zap.Uint64("held_gen", held), zap.Uint64("latest_gen", acc.GetTokenGen()),
		zap.Bool("token_sent", acc.Token != nil), zap.Bool("token_rejected", acc.GetTokenRejected()))
	if acc.GetTokenRejected() {
		c.cfg.Source.MarkRejected()
	}
	if acc.Token != nil {
		if err := c.take(stream, log, acc.GetToken(), acc.GetTokenGen(), acc.GetJwks(), OriginSessionHello); err != nil {
			return acceptedAt, err
		}
	}
	return acceptedAt, c.loop(ctx, &wg, conn, heartbeatInterval(acc), log)
}

// sessionConn is one session's stream and what its reader received from
// it: each message on in, and the error that ended the stream on inErr.
type sessionConn struct {
	stream sessionpb.SupervisorSession_ConnectClient
	in     <-chan *sessionpb.GatewayMessage
	inErr  <-chan error
}

// receive starts the session's reader, owned by wg and ended with ctx.
func receive(ctx context.Context, wg *sync.WaitGroup, stream sessionpb.SupervisorSession_ConnectClient) sessionConn {
	in := make(chan *sessionpb.GatewayMessage)
	inErr := make(chan error, 1)
	wg.Go(func() { forward(ctx, stream.Recv, in, inErr) })
	return sessionConn{stream: stream, in: in, inErr: inErr}
}

// hello sends the Hello, telling the generation the supervisor holds, and
// returns the gateway's Accepted; a Rejected, another first message or no
// answer within HelloTimeout is an error.
func (c *Client) hello(ctx context.Context, conn sessionConn, held uint64) (*sessionpb.Accepted, error) {
	hello := &sessionpb.Hello{SandboxId: c.cfg.SandboxID, InstanceId: c.cfg.InstanceID, TokenGen: held, Version: c.cfg.Version}
	if err := conn.stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: hello}}); err != nil {
		return nil, fmt.Errorf("send hello: %w", streamErr(conn.stream, err))
	}
	var first *sessionpb.GatewayMessage
	timer := time.NewTimer(c.cfg.HelloTimeout)
	defer timer.Stop()
	select {
	case first = <-conn.in:
	case err := <-conn.inErr:
		return nil, fmt.Errorf("await accepted: %w", err)
	case <-timer.C:
		return nil, fmt.Errorf("await accepted: no answer to hello within %s", c.cfg.HelloTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r := first.GetRejected(); r != nil {
		return nil, c.rejected(r)
	}
	acc := first.GetAccepted()
	if acc == nil {
		return nil, errors.New("await accepted: the gateway's first message is neither Accepted nor Rejected")
	}
	return acc, nil
}

// heartbeatInterval is the interval the gateway asked for, within bounds.
func heartbeatInterval(acc *sessionpb.Accepted) time.Duration {
	hb := acc.GetHeartbeatInterval().AsDuration()
	switch {
	case hb <= 0:
		return DefaultHeartbeatInterval
	case hb < minHeartbeatInterval:
		return minHeartbeatInterval
	}
	return hb
}

// loop runs an accepted session until it ends: it heartbeats every hb,
// ends the session once the gateway has been silent for missedHeartbeats
// intervals (judged by the client's clock, Config.Now), takes pushed
// tokens, runs execs (owned by wg) and returns why the session ended.
func (c *Client) loop(ctx context.Context, wg *sync.WaitGroup, conn sessionConn, hb time.Duration, log *zap.Logger) error {
	execs := newExecSet()
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	lastHeard := c.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-conn.inErr:
			return fmt.Errorf("session stream: %w", err)
		case <-ticker.C:
			if silent := c.cfg.Now().Sub(lastHeard); silent >= missedHeartbeats*hb {
				return fmt.Errorf("%w (%s)", ErrHeartbeatTimeout, silent.Round(time.Millisecond))
			}
			if err := conn.stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}); err != nil {
				return fmt.Errorf("send heartbeat: %w", streamErr(conn.stream, err))
			}
		case m := <-conn.in:
			lastHeard = c.cfg.Now()
			switch msg := m.GetMsg().(type) {
			case *sessionpb.GatewayMessage_Heartbeat:
			case *sessionpb.GatewayMessage_TokenUpdate:
				u := msg.TokenUpdate
				if err := c.take(conn.stream, log, u.GetToken(), u.GetGen(), u.GetJwks(), OriginSessionPush); err != nil {
					return err
				}
			case *sessionpb.GatewayMessage_ExecRequest:
				c.startExec(ctx, wg, execs, log, msg.ExecRequest)
			case *sessionpb.GatewayMessage_ExecCancel:
				execs.cancel(msg.ExecCancel.GetExecId())
			case *sessionpb.GatewayMessage_Rejected:
				return c.rejected(msg.Rejected)
			default:
				log.Warn("unexpected message from the gateway; ignored", zap.String("type", fmt.Sprintf("%T", msg)))
			}
		}
	}
}

// take offers a token from the gateway to the source and acknowledges it
// once the source holds it (or something newer).
func (c *Client) take(stream sessionpb.SupervisorSession_ConnectClient, log *zap.Logger, raw string, gen uint64, jwks []byte, origin string) error {
	offerErr := c.cfg.Source.Offer(raw, jwks, origin)
	cur := c.cfg.Source.Current()
	if offerErr != nil && (cur == nil || cur.Gen() < gen) {
		// Not acknowledged: the gateway resends, and the session ends if
		// the credential it knows expires.
		log.Warn("token from the gateway refused by the source", zap.Uint64("gen", gen), zap.String("origin", origin), zap.Error(offerErr))
		return nil
	}
	log.Debug("token taken", zap.Uint64("gen", gen), zap.String("origin", origin), zap.Stringer("current", cur))
	if err := stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_TokenAck{TokenAck: &sessionpb.TokenAck{Gen: gen}}}); err != nil {
		return fmt.Errorf("send token ack: %w", streamErr(stream, err))
	}
	return nil
}

func (c *Client) rejected(r *sessionpb.Rejected) error {
	switch r.GetCode() {
	case sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, sessionpb.RejectCode_REJECT_CODE_SUPERSEDED:
		c.cfg.Source.MarkRejected()
	case sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX:
		c.unknown.Store(true)
	}
	return &RejectedError{Code: r.GetCode(), Reason: r.GetReason()}
}

// streamErr turns a Send's io.EOF into the status that ended the stream.
func streamErr(stream grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Header(); rerr != nil {
			return rerr
		}
		return fmt.Errorf("stream closed by the gateway: %w", err)
	}
	return err
}

// execSet tracks a session's running execs so that ExecCancel finds them.
type execSet struct {
	mu      sync.Mutex
	cancels map[string]context.CancelFunc
}

func newExecSet() *execSet { return &execSet{cancels: map[string]context.CancelFunc{}} }

func (s *execSet) add(id string, cancel context.CancelFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.cancels[id]; dup || len(s.cancels) >= maxConcurrentExecs {
		return false
	}
	s.cancels[id] = cancel
	return true
}

func (s *execSet) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cancels, id)
}

func (s *execSet) cancel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cancel := s.cancels[id]; cancel != nil {
		cancel()
	}
}

// startExec runs one exec request in a goroutine owned by the session
// (wg, ctx): its output goes back on an ExecOutput call of its own.
func (c *Client) startExec(ctx context.Context, wg *sync.WaitGroup, execs *execSet, log *zap.Logger, req *sessionpb.ExecRequest) {
	id := req.GetExecId()
	ectx, cancel := context.WithCancel(ctx)
	if !execs.add(id, cancel) {
		cancel()
		log.Warn("exec refused: duplicate id or too many running", zap.String("exec", id))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.sendExecResult(ctx, log, id, ExecResult{ExitCode: ExitCannotExecute, Error: "supervisor refused the exec: duplicate id or too many running"})
		}()
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer execs.remove(id)
		defer cancel()
		if req.GetStream() {
			c.runStreamingExec(ectx, cancel, log, req)
			return
		}
		out, err := c.rpc.ExecOutput(ectx)
		if err != nil {
			log.Warn("open exec output", zap.String("exec", id), zap.Error(err))
			return
		}
		sink := &execSink{stream: out, id: id, cancel: cancel, done: closeOutput(out)}
		cmd := ExecCommand{ID: id, Argv: req.GetArgv(), Env: req.GetEnv(), Stdin: req.GetStdin(), HasStdin: req.GetHasStdin()}
		log.Info("exec started", zap.String("exec", id), zap.Strings("argv", cmd.Argv))
		res := c.cfg.Exec.Run(ectx, cmd, sink.writer(true), sink.writer(false))
		log.Info("exec ended", zap.String("exec", id), zap.Int("code", res.ExitCode), zap.String("error", res.Error))
		if err := sink.exit(res); err != nil {
			log.Warn("send exec exit", zap.String("exec", id), zap.Error(err))
		}
	}()
}

// sendExecResult answers an exec that did not run with its result alone.
func (c *Client) sendExecResult(ctx context.Context, log *zap.Logger, id string, res ExecResult) {
	out, err := c.rpc.ExecOutput(ctx)
	if err == nil {
		err = (&execSink{stream: out, id: id, cancel: func() {}, done: closeOutput(out)}).exit(res)
	}
	if err != nil {
		log.Warn("send exec result", zap.String("exec", id), zap.Error(err))
	}
}

// execSink sends an exec's output as chunks on its ExecOutput stream; the
// command's stdout and stderr copiers share it.
type execSink struct {
	stream interface {
		Send(*sessionpb.ExecChunk) error
	}
	id     string
	cancel context.CancelFunc // stops the command when the gateway stops listening
	done   func() error       // ends the call once the exit is sent

	mu     sync.Mutex
	failed error
}

func (s *execSink) send(chunk *sessionpb.ExecChunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if err := s.stream.Send(chunk); err != nil {
		s.failed = fmt.Errorf("send exec %s output: %w", s.id, err)
		s.cancel()
		return s.failed
	}
	return nil
}

type sinkWriter struct {
	sink   *execSink
	stdout bool
}

func (s *execSink) writer(stdout bool) io.Writer { return sinkWriter{sink: s, stdout: stdout} }

func (w sinkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		piece := p[:min(len(p), execChunkSize)]
		chunk := &sessionpb.ExecChunk{ExecId: w.sink.id}
		if w.stdout {
			chunk.Data = &sessionpb.ExecChunk_Stdout{Stdout: piece}
		} else {
			chunk.Data = &sessionpb.ExecChunk_Stderr{Stderr: piece}
		}
		if err := w.sink.send(chunk); err != nil {
			return n, err
		}
		n += len(piece)
		p = p[len(piece):]
	}
	return n, nil
}

func (s *execSink) exit(res ExecResult) error {
	err := s.send(&sessionpb.ExecChunk{ExecId: s.id, Data: &sessionpb.ExecChunk_Exit{Exit: &sessionpb.ExecExit{
		Code: int32(res.ExitCode), Signal: int32(res.Signal), Error: res.Error}}})
	if err != nil {
		return err
	}
	return s.done()
}

// closeOutput ends an ExecOutput call and waits for the gateway's answer.
func closeOutput(out sessionpb.SupervisorSession_ExecOutputClient) func() error {
	return func() error {
		_, err := out.CloseAndRecv()
		return err
	}
}

// ReportExit tells the gateway that the workload ended, retrying a few
// times (the gateway may be restarting) within ctx.
//
// Once the gateway has said that it knows the sandbox no more (deleted),
// it fails at once with ErrUnknownSandbox: there is no one to report the
// exit to, and a supervisor being stopped should not wait trying.
func (c *Client) ReportExit(ctx context.Context, code, signal int) error {
	if c.unknown.Load() {
		return fmt.Errorf("report exit code %d of %s: %w", code, c.cfg.SandboxID, ErrUnknownSandbox)
	}
	req := &sessionpb.ReportExitRequest{SandboxId: c.cfg.SandboxID, InstanceId: c.cfg.InstanceID,
		ExitCode: int32(code), Signal: int32(signal)}
	var err error
	for attempt := 0; attempt < reportExitAttempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, reportExitTimeout)
		_, err = c.rpc.ReportExit(actx, req, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.PermissionDenied, codes.NotFound, codes.Unimplemented:
			return fmt.Errorf("report exit code %d of %s: %w", code, c.cfg.SandboxID, err)
		}
		if attempt == reportExitAttempts-1 {
			break
		}
		timer := time.NewTimer(c.cfg.Backoff.Delay(attempt+2, rand.Float64()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("report exit code %d of %s: %w (last error: %v)", code, c.cfg.SandboxID, ctx.Err(), err)
		case <-timer.C:
		}
	}
	return fmt.Errorf("report exit code %d of %s: %d attempts failed: %w", code, c.cfg.SandboxID, reportExitAttempts, err)
}

// callCredentials puts the source's current token (when there is one) and
// the sandbox id on every call. It does not require transport security:
// the target's scheme is the operator's choice, and tcp:// serves QEMU's
// user-network forward, which never leaves the host.
type callCredentials struct {
	source    TokenSource
	inner     credentials.PerRPCCredentials
	sandboxID string
}

func (c *callCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	md := map[string]string{SandboxIDMetadata: c.sandboxID}
	if c.source.Current() == nil || c.inner == nil {
		// No token yet: an attested socket accepts the call without one.
		return md, nil
	}
	inner, err := c.inner.GetRequestMetadata(ctx, uri...)
	if err != nil {
		return nil, fmt.Errorf("token for call: %w", err)
	}
	for k, v := range inner {
		md[k] = v
	}
	return md, nil
}

func (c *callCredentials) RequireTransportSecurity() bool { return false }

// forward sends each message recv returns to in until recv fails, and
// then its error to inErr, which must have room for it; it stops early
// once ctx ends. It is the supervisor's reader of its session stream.
func forward[M any](ctx context.Context, recv func() (M, error), in chan<- M, inErr chan<- error) {
	for {
		m, err := recv()
		if err != nil {
			inErr <- err
			return
		}
		select {
		case in <- m:
		case <-ctx.Done():
			return
		}
	}
}
