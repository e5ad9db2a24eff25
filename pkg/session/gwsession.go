package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// gwSession is one established session, as the registry sees it. Others
// talk to it through its methods and its out channel; its loop does the
// work.
type gwSession struct {
	id        string
	sandboxID string
	loop      *sessionLoop
	slot      int // its part of the heartbeat interval (see heartbeats)

	out  chan *sessionpb.GatewayMessage // exec requests and cancels to send; call outQueued after
	done chan struct{}                  // closed when the session is over
	// closing is closed as soon as the session starts to end, before the
	// supervisor is told: what fails after it failed because of the end.
	closing     chan struct{}
	closingOnce sync.Once
}

func newGWSession(sandboxID string) *gwSession {
	return &gwSession{
		id: randid.New(idBytes), sandboxID: sandboxID, slot: rand.IntN(heartbeatSlots),
		out:     make(chan *sessionpb.GatewayMessage, 16),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
}

func (g *gwSession) markClosing() { g.closingOnce.Do(func() { close(g.closing) }) }

// notifyPush tells the session a new generation may exist; the loop reads
// Latest.
func (g *gwSession) notifyPush() { g.loop.post(duePush) }

// outQueued tells the session a message waits in out.
func (g *gwSession) outQueued() { g.loop.post(dueOut) }

// end asks the session to end with code; the first call wins.
func (g *gwSession) end(code sessionpb.RejectCode, reason string) {
	l := g.loop
	l.mu.Lock()
	if l.endReq == nil {
		l.endReq = &rejection{code: code, reason: reason}
	}
	l.mu.Unlock()
	l.post(dueEnd)
}

// Connect implements sessionpb.SupervisorSessionServer: one session.
//
// The handler's goroutine reads the stream and nothing else: the rest of
// the session (pushes, heartbeats, ends, every send) is done by a pump
// goroutine that runs only while there is something to do (see
// sessionLoop), and the server's one heartbeat ticker drives every
// session's clock. An idle session thus costs the gateway no goroutine
// beyond gRPC's own. To end a session from elsewhere, its loop cancels the
// stream's context, which the tap of ServerOptions made cancellable; that
// unblocks the handler's Recv and any Send.
func (s *Server) Connect(stream sessionpb.SupervisorSession_ConnectServer) error {
	if !s.enter() {
		return status.Error(codes.Unavailable, "gateway is shutting down")
	}
	defer s.wg.Done()
	ctx := stream.Context()
	cancel, ok := ctx.Value(streamCancelKey{}).(context.CancelFunc)
	if !ok {
		return status.Error(codes.Internal, "the gateway's gRPC server was not built with session.ServerOptions")
	}
	defer cancel()

	hello, err := s.awaitHello(ctx, stream, cancel)
	if err != nil {
		return err
	}
	// Authentication and acceptance go deep (signatures, the store, the
	// logs): they run on a goroutine of their own, whose stack goes with
	// it, so that the handler's, which lasts as long as the session, stays
	// at the size reading the stream needs.
	var loop *sessionLoop
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		loop, err = s.open(ctx, stream, cancel, hello)
	}()
	<-opened
	if err != nil {
		return err
	}
	defer s.unregister(loop.sess)
	return loop.run()
}

// open authenticates the Hello's caller, registers its session and
// accepts it. It refuses the stream itself on any failure and returns the
// error the handler returns.
func (s *Server) open(ctx context.Context, stream sessionpb.SupervisorSession_ConnectServer, cancel context.CancelFunc,
	hello *sessionpb.Hello) (*sessionLoop, error) {
	cred, err := s.authenticate(ctx, hello.GetSandboxId())
	if err != nil {
		return nil, s.refuse(stream, hello.GetSandboxId(), err)
	}
	sess := newGWSession(hello.GetSandboxId())
	loop := &sessionLoop{s: s, sess: sess, stream: stream, ctx: ctx, cancel: cancel, instance: hello.GetInstanceId()}
	sess.loop = loop
	// Register before reading Latest: a generation minted from here on
	// finds the session and is pushed; one minted before is in Latest.
	if !s.register(sess) {
		return nil, s.refuse(stream, sess.sandboxID, reject(sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "gateway is shutting down"))
	}
	if err := loop.accept(ctx, hello, cred); err != nil {
		s.unregister(sess)
		return nil, s.refuse(stream, sess.sandboxID, err)
	}
	return loop, nil
}

// awaitHello reads the first message, within HelloTimeout and unless the
// server closes first. It refuses the stream itself on any failure and
// returns the error the handler returns. A timeout or a shutdown refuses
// the stream from its own goroutine, then cancels it to end the Recv:
// gRPC ends a stream whose Recv failed, so the Rejected must leave first.
func (s *Server) awaitHello(ctx context.Context, stream sessionpb.SupervisorSession_ConnectServer, cancel context.CancelFunc) (*sessionpb.Hello, error) {
	var once sync.Once
	var gaveUp error
	giveUp := func(r error) func() {
		return func() {
			once.Do(func() {
				gaveUp = s.refuse(stream, "", r)
				cancel()
			})
		}
	}
	timer := time.AfterFunc(s.cfg.HelloTimeout, giveUp(reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO,
		fmt.Sprintf("no hello within %s", s.cfg.HelloTimeout))))
	stopQuit := context.AfterFunc(s.quitCtx, giveUp(reject(sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "gateway is shutting down")))
	m, err := stream.Recv()
	timer.Stop()
	stopQuit()
	once.Do(func() {}) // from here on, neither refuses
	if gaveUp != nil {
		return nil, gaveUp
	}
	if err != nil {
		return nil, s.refuse(stream, "", err)
	}
	hello := m.GetHello()
	if hello == nil {
		return nil, s.refuse(stream, "", reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "first message is not a Hello"))
	}
	if err := checkHello(hello); err != nil {
		return nil, s.refuse(stream, "", err)
	}
	if claimed := claimedSandbox(ctx); claimed != "" && claimed != hello.GetSandboxId() {
		return nil, s.refuse(stream, "", reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO,
			fmt.Sprintf("hello for sandbox %q on a call for sandbox %q", hello.GetSandboxId(), claimed)))
	}
	return hello, nil
}

func checkHello(h *sessionpb.Hello) error {
	bad := func(format string, args ...any) error {
		return reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, fmt.Sprintf(format, args...))
	}
	switch {
	case h.GetSandboxId() == "":
		return bad("hello has no sandbox id")
	case len(h.GetSandboxId()) > maxHelloField, len(h.GetInstanceId()) > maxHelloField, len(h.GetVersion()) > maxHelloField:
		return bad("hello field longer than %d bytes", maxHelloField)
	}
	return nil
}

// refuse ends a stream that failed before or at acceptance: a rejection
// is sent as Rejected, anything else ends the call as it is.
func (s *Server) refuse(stream sessionpb.SupervisorSession_ConnectServer, sandboxID string, err error) error {
	var r *rejection
	if !errors.As(err, &r) {
		if !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) {
			s.log.Debug("session failed before acceptance", zap.String("sandbox", sandboxID), zap.Error(err))
		}
		return err
	}
	s.metrics.rejections.WithLabelValues(codeLabel(r.code)).Inc()
	s.log.Info("session refused", zap.String("sandbox", sandboxID),
		zap.String("code", codeLabel(r.code)), zap.String("reason", r.reason))
	_ = stream.Send(rejectedMessage(r))
	return r
}

func rejectedMessage(r *rejection) *sessionpb.GatewayMessage {
	return &sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Rejected{
		Rejected: &sessionpb.Rejected{Code: r.code, Reason: r.reason}}}
}

// sessionLoop is the state of one established session. Three parties
// work on it: the handler's goroutine, which reads the stream (run); the
// pump, a goroutine started when there is work and gone when there is
// none (pump), which serves pushes, ticks and ends and is the only one to
// Send; and the server's heartbeat ticker (wheelTick). mu guards the
// state and is never held across a Send.
type sessionLoop struct {
	s      *Server
	sess   *gwSession
	stream sessionpb.SupervisorSession_ConnectServer
	ctx    context.Context
	cancel context.CancelFunc // cancels ctx: the handler's Recv and a Send in progress return
	// instance is the supervisor's instance id, for the logs (see log).
	instance string

	// sendingAt is when the Send in progress began (UnixNano on the
	// server's Clock), 0 when none is: the ticker reads it without mu, to
	// end a session whose supervisor stopped reading.
	sendingAt atomic.Int64

	mu sync.Mutex
	// acked is the newest generation the supervisor holds for sure (it
	// presented or acknowledged it).
	acked uint64
	// unacked are tokens sent and not acknowledged yet, by generation.
	unacked map[uint64]*auth.Token
	// newestSent is the newest generation sent; sentAt is when (for the
	// resend), on the server's Clock.
	newestSent uint64
	sentAt     time.Time
	// pushDue is set when a push could not be served (store error) and
	// is retried on the next tick.
	pushDue bool
	// credentialExpiry is when the session's credential expires (Now's
	// clock): the expiry of the newest token presented or acknowledged.
	credentialExpiry time.Time
	lastHeard        time.Time

	// due is the pump's work (a set of due* bits); endReq is why the
	// session was asked to end (end).
	due    uint8
	endReq *rejection
	// acks are the generations acknowledged, not yet recorded: the pump
	// records them, keeping the store's depth off the handler's stack.
	acks []uint64
	// queue is what the pump sends next, in order; sending is set while
	// it sends one. sendFailed is set once a Send failed: the rest never
	// leaves.
	queue      []*sessionpb.GatewayMessage
	sending    bool
	sendFailed bool
	// pumping is set while a pump goroutine runs; live while the pump
	// may start (from acceptance until the handler returns).
	pumping, live bool
	// over is set once the session's outcome, verdict, is decided: the
	// pump then only sends what is queued (the Rejected, at most) and
	// cancels the stream.
	over    bool
	verdict error
}

// The pump's work.
const (
	duePush uint8 = 1 << iota // a new generation may exist
	dueTick                   // a heartbeat interval ended
	dueOut                    // sess.out holds messages
	dueEnd                    // end was called
	dueAcks                   // acks holds acknowledgements
)

// sendQueue bounds the messages waiting for a supervisor that reads
// slowly; past it the session ends rather than grow.
const sendQueue = 64

// post adds work and starts the pump unless it runs or may not.
func (l *sessionLoop) post(work uint8) {
	l.mu.Lock()
	l.due |= work
	l.startPumpLocked()
	l.mu.Unlock()
}

func (l *sessionLoop) startPumpLocked() {
	if l.pumping || !l.live || (l.due == 0 && len(l.queue) == 0 && !l.over) {
		return
	}
	l.pumping = true
	l.s.wg.Add(1) // the handler's count keeps the group above zero while live
	go l.pump()
}

// pump serves the due work and sends the queue, one message at a time,
// until nothing is left; once the session is over it cancels the stream
// after the last message left (or failed).
func (l *sessionLoop) pump() {
	defer l.s.wg.Done()
	l.mu.Lock()
	for {
		if !l.over && l.due != 0 {
			if err := l.serveDueLocked(); err != nil {
				l.concludeLocked(err)
			}
			continue
		}
		if len(l.queue) == 0 || l.sendFailed {
			l.pumping = false
			over := l.over
			l.mu.Unlock()
			if over {
				l.cancel()
			}
			return
		}
		m := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		if len(l.queue) == 0 {
			l.queue = nil // let the backing array go
		}
		l.sending = true
		l.mu.Unlock()
		l.sendingAt.Store(l.s.cfg.Clock.Now().UnixNano())
		err := l.stream.Send(m)
		l.sendingAt.Store(0)
		l.mu.Lock()
		l.sending = false
		if err != nil {
			l.sendFailed = true
			l.concludeLocked(err)
		}
	}
}

// serveDueLocked serves the due work: an end first, then queued exec
// messages, pushes and the tick, as the select of a loop would.
func (l *sessionLoop) serveDueLocked() error {
	due := l.due
	l.due = 0
	if due&dueEnd != 0 && l.endReq != nil {
		return l.endReq
	}
	if due&dueAcks != 0 {
		acks := l.acks
		l.acks = nil // the handler appends the next ones meanwhile
		for _, gen := range acks {
			l.ackLocked(gen)
		}
		if l.over {
			return nil
		}
	}
	if due&dueOut != 0 {
		for more := true; more; {
			select {
			case m := <-l.sess.out:
				if err := l.sendLocked(m); err != nil {
					return err
				}
			default:
				more = false
			}
		}
	}
	if due&duePush != 0 {
		if err := l.deliverLocked(); err != nil {
			return err
		}
	}
	if due&dueTick != 0 {
		return l.tickLocked()
	}
	return nil
}

// sendLocked queues m for the supervisor.
func (l *sessionLoop) sendLocked(m *sessionpb.GatewayMessage) error {
	if n := len(l.queue); n >= sendQueue {
		return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("the supervisor does not read: %d messages wait", n))
	}
	l.queue = append(l.queue, m)
	l.startPumpLocked()
	return nil
}

// sendStalled reports how long the Send in progress has been blocked.
func (l *sessionLoop) sendStalled() time.Duration {
	if at := l.sendingAt.Load(); at != 0 {
		return l.s.cfg.Clock.Now().Sub(time.Unix(0, at))
	}
	return 0
}

// concludeLocked decides the session's outcome, once: err, told to the
// supervisor when it is a rejection.
func (l *sessionLoop) concludeLocked(err error) {
	if l.over {
		return
	}
	l.over, l.verdict = true, err
	l.sess.markClosing()
	var r *rejection
	if !errors.As(err, &r) {
		l.log(zapcore.InfoLevel, "session ended", zap.Error(err))
		return
	}
	l.s.metrics.rejections.WithLabelValues(codeLabel(r.code)).Inc()
	l.log(zapcore.InfoLevel, "session ended", zap.String("code", codeLabel(r.code)), zap.String("reason", r.reason))
	if !l.sendFailed && len(l.queue) < sendQueue {
		l.queue = append(l.queue, rejectedMessage(r))
	}
	l.startPumpLocked()
}

// flushed reports whether nothing queued can still leave.
func (l *sessionLoop) flushed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sendFailed || (len(l.queue) == 0 && !l.sending)
}

// flush gives queued messages (a final Rejected, or the Accepted of a
// supervisor that half-closed) up to limit to leave. It returns early when
// a Send failed: what is still queued will never leave.
// It waits in real time, not on the Clock: it waits for bytes to leave.
func (l *sessionLoop) flush(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !l.flushed() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// end concludes the session with err (unless it is over already), lets
// what is queued leave, and returns the session's outcome. The handler
// returns it.
func (l *sessionLoop) end(err error) error {
	l.mu.Lock()
	if !l.over {
		switch {
		case errors.Is(err, io.EOF):
			// A half-close: the supervisor sends nothing more but may
			// still read. What is queued for it (the Accepted, at least)
			// leaves before the handler's return cancels the stream.
			l.log(zapcore.InfoLevel, "session closed by the supervisor")
			l.over = true
			l.sess.markClosing()
		case status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled):
			l.log(zapcore.InfoLevel, "session ended by the supervisor's transport", zap.Error(err))
			l.over, l.verdict = true, err
			l.sess.markClosing()
		default:
			l.concludeLocked(err)
		}
	}
	l.mu.Unlock()
	l.flush(l.s.cfg.HeartbeatInterval)
	l.mu.Lock()
	l.live = false
	verdict := l.verdict
	l.mu.Unlock()
	return verdict
}

// run reads the stream until the session ends.
func (l *sessionLoop) run() error {
	for {
		m, err := l.stream.Recv()
		if err != nil {
			return l.end(err)
		}
		if err := l.received(m); err != nil {
			return l.end(err)
		}
	}
}

func (l *sessionLoop) received(m *sessionpb.SupervisorMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over {
		return nil // the verdict is in; the pump cancels the stream
	}
	l.lastHeard = l.s.cfg.Clock.Now()
	return l.handleLocked(m)
}

// wheelTick is the server's heartbeat ticker's call, every interval. It
// ends from here a session whose supervisor stopped reading, since the
// pump is blocked in its Send; the rest is the pump's (tickLocked).
func (l *sessionLoop) wheelTick() {
	if stalled := l.sendStalled(); stalled >= missedHeartbeats*l.s.cfg.HeartbeatInterval {
		l.mu.Lock()
		l.concludeLocked(reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("the supervisor has not read for %s", stalled.Round(time.Millisecond))))
		l.mu.Unlock()
		l.cancel()
		return
	}
	l.post(dueTick)
}

// accept answers the Hello: the latest token when it is newer than what
// the supervisor holds, or when what it presented is not current. A
// presented token the store never issued is answered with a generation
// above it (Authority.Reissue), never with a number it may already hold.
func (l *sessionLoop) accept(ctx context.Context, hello *sessionpb.Hello, cred credential) error {
	s := l.s
	var latest *auth.Token
	var err error
	if cred.unissued != nil {
		latest, err = s.cfg.Authority.Reissue(ctx, l.sess.sandboxID, cred.unissued.Gen())
	} else {
		latest, err = s.cfg.Authority.Latest(ctx, l.sess.sandboxID)
	}
	if err != nil {
		if errors.Is(err, ErrUnknownSandbox) {
			return reject(sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX, err.Error())
		}
		return status.Errorf(codes.Unavailable, "gateway cannot read the latest token: %v", err)
	}
	notCurrent := cred.presented == nil || !s.cfg.Now().Before(cred.presented.ExpiresAt())
	if !notCurrent {
		// The supervisor holds what it presented: record it as delivered
		// (it may have come from the directory). Before mu is taken: the
		// session is registered, and the heartbeat ticker and pushes take
		// mu; none may wait on the store.
		if err := s.cfg.Authority.RecordDelivered(ctx, l.sess.sandboxID, cred.presented.Gen()); err != nil {
			l.log(zapcore.WarnLevel, "record delivered generation", zap.Uint64("gen", cred.presented.Gen()), zap.Error(err))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	hb := s.cfg.HeartbeatInterval
	if notCurrent {
		// Attested, with no usable token: the session lives as long as it
		// takes to acknowledge the latest one.
		l.credentialExpiry = s.cfg.Now().Add(missedHeartbeats * hb)
	} else {
		l.acked = cred.presented.Gen()
		l.credentialExpiry = cred.presented.ExpiresAt()
	}
	acc := &sessionpb.Accepted{
		SessionId:         l.sess.id,
		HeartbeatInterval: durationpb.New(hb),
		TokenGen:          latest.Gen(),
		Jwks:              s.cfg.Authority.JWKS(),
		TokenRejected:     notCurrent && cred.bearer,
	}
	if latest.Gen() > hello.GetTokenGen() || notCurrent {
		acc.Token = proto.String(latest.Raw())
		l.sent(latest)
		s.metrics.pushes.Inc()
	}
	l.live = true
	if err := l.sendLocked(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Accepted{Accepted: acc}}); err != nil {
		return err
	}
	l.lastHeard = l.s.cfg.Clock.Now()
	l.log(zapcore.InfoLevel, "session accepted", zap.Bool("attested", cred.attested), zap.Uint64("hello_gen", hello.GetTokenGen()),
		zap.Stringer("presented", cred.presented), zap.Stringer("not_issued", cred.unissued),
		zap.Stringer("latest", latest), zap.Bool("token_sent", acc.Token != nil),
		zap.String("version", hello.GetVersion()))
	return nil
}

func (l *sessionLoop) sent(tok *auth.Token) {
	if l.unacked == nil {
		l.unacked = make(map[uint64]*auth.Token, 1)
	}
	l.unacked[tok.Gen()] = tok
	l.newestSent = tok.Gen()
	l.sentAt = l.s.cfg.Clock.Now()
}

func (l *sessionLoop) handleLocked(m *sessionpb.SupervisorMessage) error {
	switch msg := m.GetMsg().(type) {
	case *sessionpb.SupervisorMessage_Heartbeat:
		return nil
	case *sessionpb.SupervisorMessage_TokenAck:
		if len(l.acks) >= sendQueue {
			return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
				fmt.Sprintf("the supervisor acknowledges faster than the gateway records: %d acknowledgements wait", len(l.acks)))
		}
		l.acks = append(l.acks, msg.TokenAck.GetGen())
		l.due |= dueAcks
		l.startPumpLocked()
		return nil
	case *sessionpb.SupervisorMessage_Hello:
		return reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "second hello on an established session")
	default:
		return reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "empty or unknown message")
	}
}

func (l *sessionLoop) ackLocked(gen uint64) {
	tok, ok := l.unacked[gen]
	if !ok {
		if gen > l.acked {
			l.log(zapcore.WarnLevel, "acknowledgement of a generation not sent on this session", zap.Uint64("gen", gen))
		}
		return
	}
	l.s.metrics.acks.Inc()
	var err error
	l.outside(func() { err = l.s.cfg.Authority.RecordDelivered(l.ctx, l.sess.sandboxID, gen) })
	if err != nil {
		l.log(zapcore.WarnLevel, "record delivered generation", zap.Uint64("gen", gen), zap.Error(err))
	}
	if gen > l.acked {
		l.acked = gen
	}
	if tok.ExpiresAt().After(l.credentialExpiry) {
		l.credentialExpiry = tok.ExpiresAt()
	}
	for g := range l.unacked {
		if g <= gen {
			delete(l.unacked, g)
		}
	}
	l.log(zapcore.DebugLevel, "token acknowledged", zap.Stringer("token", tok))
}

// outside runs fn, a call into the gateway (its store may be slow, or
// away for minutes), without mu, so that the handler's reads, the
// heartbeat ticker, which serves every session, and pushes never wait on
// it. Only the pump calls it; pumping keeps a second pump from starting
// meanwhile. It reports whether the session is still going once mu is
// held again.
func (l *sessionLoop) outside(fn func()) bool {
	l.mu.Unlock()
	fn()
	l.mu.Lock()
	return !l.over
}

// deliverLocked sends the latest token if the supervisor lacks it and it
// has not been sent yet; resends are the tick's business.
func (l *sessionLoop) deliverLocked() error {
	l.pushDue = false
	var latest *auth.Token
	var err error
	if !l.outside(func() { latest, err = l.s.cfg.Authority.Latest(l.ctx, l.sess.sandboxID) }) {
		return nil // ended meanwhile
	}
	if err != nil {
		if errors.Is(err, ErrUnknownSandbox) {
			return reject(sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX, err.Error())
		}
		l.log(zapcore.WarnLevel, "read latest token for push; retrying", zap.Error(err))
		l.pushDue = true
		return nil
	}
	if latest.Gen() <= l.acked || latest.Gen() <= l.newestSent {
		return nil
	}
	l.sent(latest)
	l.s.metrics.pushes.Inc()
	l.log(zapcore.DebugLevel, "token pushed", zap.Stringer("token", latest))
	return l.sendTokenLocked(latest)
}

func (l *sessionLoop) sendTokenLocked(tok *auth.Token) error {
	return l.sendLocked(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_TokenUpdate{
		TokenUpdate: &sessionpb.TokenUpdate{Token: tok.Raw(), Gen: tok.Gen(), Jwks: l.s.cfg.Authority.JWKS()}}})
}

// tickLocked runs every heartbeat interval: it ends a session whose peer
// went silent or whose credential expired, resends an unacknowledged push
// and sends the heartbeat. (A supervisor that stopped reading is
// wheelTick's: the pump is blocked then.)
func (l *sessionLoop) tickLocked() error {
	hb := l.s.cfg.HeartbeatInterval
	if silent := l.s.cfg.Clock.Now().Sub(l.lastHeard); silent >= missedHeartbeats*hb {
		return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("nothing heard from the supervisor for %s", silent.Round(time.Millisecond)))
	}
	if now := l.s.cfg.Now(); !now.Before(l.credentialExpiry) {
		return reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED,
			fmt.Sprintf("the session's credential expired at %s", l.credentialExpiry.UTC().Format(time.RFC3339)))
	}
	if l.pushDue {
		if err := l.deliverLocked(); err != nil {
			return err
		}
	}
	if tok := l.unacked[l.newestSent]; tok != nil && l.s.cfg.Clock.Now().Sub(l.sentAt) >= resendAfter*hb {
		l.sentAt = l.s.cfg.Clock.Now()
		l.s.metrics.resends.Inc()
		l.log(zapcore.DebugLevel, "token resent", zap.Stringer("token", tok))
		if err := l.sendTokenLocked(tok); err != nil {
			return err
		}
	}
	return l.sendLocked(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}})
}

// log logs msg with the session's sandbox, instance and session id. The
// fields are added when something is logged rather than kept in a logger
// of the session's (zap's With): that would hold an encoded copy of them,
// a 1 KiB buffer, for as long as the session lives.
func (l *sessionLoop) log(level zapcore.Level, msg string, fields ...zap.Field) {
	if ce := l.s.log.Check(level, msg); ce != nil {
		ce.Write(append([]zap.Field{zap.String("sandbox", l.sess.sandboxID), zap.String("instance", l.instance),
			zap.String("session", l.sess.id)}, fields...)...)
	}
}

// startHeartbeatsLocked starts the heartbeat ticker unless it runs. One
// ticker serves every session: a ticker of each would need a goroutine of
// each to wait on it.
func (s *Server) startHeartbeatsLocked() {
	if s.ticks != nil {
		return
	}
	s.ticks = make(chan struct{})
	s.wg.Add(1) // the registering handler's count keeps the group above zero
	go s.heartbeats(s.ticks)
}

// stopHeartbeatsLocked ends the heartbeat ticker once no session is left.
func (s *Server) stopHeartbeatsLocked() {
	if len(s.sessions) == 0 && s.ticks != nil {
		close(s.ticks)
		s.ticks = nil
	}
}

// heartbeatSlots is how many parts the heartbeat ticker cuts an interval
// into, each no shorter than minHeartbeatSlot: each session belongs to one
// (gwSession.slot), so that thousands of sessions do not all beat, and all
// wake a pump, at the same instant.
const (
	heartbeatSlots   = 16
	minHeartbeatSlot = 100 * time.Millisecond
)

// heartbeats ticks every session once every heartbeat interval, on the
// server's Clock, until stop is closed: every slot of the interval it
// ticks the sessions of the slots whose turn came (all of them when the
// clock jumped a whole interval, as a test's may).
func (s *Server) heartbeats(stop <-chan struct{}) {
	defer s.wg.Done()
	hb := s.cfg.HeartbeatInterval
	slots := int(min(max(hb/minHeartbeatSlot, 1), heartbeatSlots))
	step := hb / time.Duration(slots)
	ticker := s.cfg.Clock.NewTicker(step)
	defer ticker.Stop()
	last := s.cfg.Clock.Now()
	slot := 0
	var list []*gwSession
	for {
		select {
		case <-stop:
			return
		case <-ticker.C():
		}
		now := s.cfg.Clock.Now()
		turns := max(int(now.Sub(last)/step), 1) // a tick is a turn, however early
		last = last.Add(time.Duration(turns) * step)
		turns = min(turns, slots)
		var due [heartbeatSlots]bool
		for range turns {
			due[slot] = true
			slot = (slot + 1) % slots
		}
		s.mu.Lock()
		for _, sess := range s.sessions {
			if due[sess.slot%slots] {
				list = append(list, sess)
			}
		}
		s.mu.Unlock()
		for _, sess := range list {
			sess.loop.wheelTick()
		}
		clear(list) // hold no ended session until the next tick
		list = list[:0]
	}
}
