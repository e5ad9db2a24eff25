package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// gwSession is one established session, as the registry sees it. Its
// loop (run by the Connect handler) owns the stream; others talk to it
// through channels.
type gwSession struct {
	id        string
	sandboxID string

	push chan struct{}                  // a new generation may exist; size one
	out  chan *sessionpb.GatewayMessage // exec requests and cancels to send
	done chan struct{}                  // closed when the session is over
	// closing is closed as soon as the session starts to end, before the
	// supervisor is told: what fails after it failed because of the end.
	closing     chan struct{}
	closingOnce sync.Once

	endOnce   sync.Once
	endc      chan struct{} // closed by end
	endCode   sessionpb.RejectCode
	endReason string
}

func newGWSession(sandboxID string) *gwSession {
	return &gwSession{
		id: randid.New(idBytes), sandboxID: sandboxID,
		push: make(chan struct{}, 1),
		out:  make(chan *sessionpb.GatewayMessage, 16),
		done: make(chan struct{}),
		endc: make(chan struct{}),

		closing: make(chan struct{}),
	}
}

func (g *gwSession) markClosing() { g.closingOnce.Do(func() { close(g.closing) }) }

func (g *gwSession) notifyPush() {
	select {
	case g.push <- struct{}{}:
	default: // one pending notification is enough: the loop reads Latest
	}
}

// end asks the session to end with code; the first call wins.
func (g *gwSession) end(code sessionpb.RejectCode, reason string) {
	g.endOnce.Do(func() {
		g.endCode, g.endReason = code, reason
		close(g.endc)
	})
}

// Connect implements sessionpb.SupervisorSessionServer: one session.
func (s *Server) Connect(stream sessionpb.SupervisorSession_ConnectServer) error {
	if !s.enter() {
		return status.Error(codes.Unavailable, "gateway is shutting down")
	}
	defer s.wg.Done()
	ctx := stream.Context()
	in := make(chan *sessionpb.SupervisorMessage)
	inErr := make(chan error, 1)
	s.wg.Add(1) // the handler's count keeps the group above zero
	go s.readLoop(ctx, stream, in, inErr)

	hello, err := s.awaitHello(ctx, in, inErr)
	if err != nil {
		return s.refuse(stream, "", err)
	}
	log := s.log.With(zap.String("sandbox", hello.GetSandboxId()), zap.String("instance", hello.GetInstanceId()))
	cred, err := s.authenticate(ctx, hello.GetSandboxId())
	if err != nil {
		return s.refuse(stream, hello.GetSandboxId(), err)
	}
	sess := newGWSession(hello.GetSandboxId())
	// Register before reading Latest: a generation minted from here on
	// finds the session and is pushed; one minted before is in Latest.
	if !s.register(sess) {
		return s.refuse(stream, sess.sandboxID, reject(sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "gateway is shutting down"))
	}
	defer s.unregister(sess)
	log = log.With(zap.String("session", sess.id))
	loop := &sessionLoop{s: s, sess: sess, stream: stream, log: log, unacked: map[uint64]*auth.Token{}}
	loop.startSender(ctx)
	if err := loop.accept(ctx, hello, cred); err != nil {
		return s.refuse(stream, sess.sandboxID, err)
	}
	return loop.run(ctx, in, inErr)
}

// readLoop forwards the stream's messages to in until the stream ends;
// it stops when the handler has returned and gRPC cancelled ctx.
func (s *Server) readLoop(ctx context.Context, stream sessionpb.SupervisorSession_ConnectServer,
	in chan<- *sessionpb.SupervisorMessage, inErr chan<- error) {
	defer s.wg.Done()
	forward(ctx, stream.Recv, in, inErr)
}

// forward sends each message recv returns to in until recv fails, and
// then its error to inErr, which must have room for it; it stops early
// once ctx ends. It is each side's reader of its session stream.
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

func (s *Server) awaitHello(ctx context.Context, in <-chan *sessionpb.SupervisorMessage, inErr <-chan error) (*sessionpb.Hello, error) {
	timer := time.NewTimer(s.cfg.HelloTimeout)
	defer timer.Stop()
	select {
	case m := <-in:
		hello := m.GetHello()
		if hello == nil {
			return nil, reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "first message is not a Hello")
		}
		if err := checkHello(hello); err != nil {
			return nil, err
		}
		if claimed := claimedSandbox(ctx); claimed != "" && claimed != hello.GetSandboxId() {
			return nil, reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO,
				fmt.Sprintf("hello for sandbox %q on a call for sandbox %q", hello.GetSandboxId(), claimed))
		}
		return hello, nil
	case err := <-inErr:
		return nil, err
	case <-timer.C:
		return nil, reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO,
			fmt.Sprintf("no hello within %s", s.cfg.HelloTimeout))
	case <-s.quit:
		return nil, reject(sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "gateway is shutting down")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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

// sessionLoop is the state of one established session, owned by its
// Connect handler.
type sessionLoop struct {
	s      *Server
	sess   *gwSession
	stream sessionpb.SupervisorSession_ConnectServer
	log    *zap.Logger

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

	// out carries every message of the session to its sender goroutine,
	// so that a supervisor that stops reading blocks only that goroutine:
	// the loop keeps its clock and ends the session (see sendStalled).
	out        chan *sessionpb.GatewayMessage
	sendErr    chan error
	senderDone chan struct{} // closed when the sender goroutine ends
	sendingAt  atomic.Int64  // UnixNano when the Send in progress began; 0 when idle
	pending    atomic.Int64  // messages queued or being sent
}

// sendQueue bounds the messages waiting for a supervisor that reads
// slowly; past it the session ends rather than grow.
const sendQueue = 64

// startSender starts the session's sender goroutine. It ends when the
// stream's context does (the handler has returned), which also unblocks a
// Send in progress.
func (l *sessionLoop) startSender(ctx context.Context) {
	l.out = make(chan *sessionpb.GatewayMessage, sendQueue)
	l.sendErr = make(chan error, 1)
	l.senderDone = make(chan struct{})
	l.s.wg.Add(1)
	go func() {
		defer l.s.wg.Done()
		defer close(l.senderDone)
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-l.out:
				l.sendingAt.Store(l.s.cfg.Clock.Now().UnixNano())
				err := l.stream.Send(m)
				l.sendingAt.Store(0)
				l.pending.Add(-1)
				if err != nil {
					l.sendErr <- err
					return
				}
			}
		}
	}()
}

// send queues m for the supervisor.
func (l *sessionLoop) send(m *sessionpb.GatewayMessage) error {
	l.pending.Add(1)
	select {
	case l.out <- m:
		return nil
	default:
		l.pending.Add(-1)
		return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("the supervisor does not read: %d messages wait", sendQueue))
	}
}

// sendStalled reports how long the Send in progress has been blocked.
func (l *sessionLoop) sendStalled() time.Duration {
	if at := l.sendingAt.Load(); at != 0 {
		return l.s.cfg.Clock.Now().Sub(time.Unix(0, at))
	}
	return 0
}

// flush gives queued messages (a final Rejected, or the Accepted of a
// supervisor that half-closed) up to limit to leave. It returns early when
// the sender stopped: what it still holds will never leave.
// It waits in real time, not on the Clock: it waits for bytes to leave.
func (l *sessionLoop) flush(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for l.pending.Load() > 0 && time.Now().Before(deadline) {
		select {
		case <-l.senderDone:
			return
		case <-time.After(time.Millisecond):
		}
	}
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
	hb := s.cfg.HeartbeatInterval
	notCurrent := cred.presented == nil || !s.cfg.Now().Before(cred.presented.ExpiresAt())
	if notCurrent {
		// Attested, with no usable token: the session lives as long as it
		// takes to acknowledge the latest one.
		l.credentialExpiry = s.cfg.Now().Add(missedHeartbeats * hb)
	} else {
		// The supervisor holds what it presented: record it as delivered
		// (it may have come from the directory).
		l.acked = cred.presented.Gen()
		l.credentialExpiry = cred.presented.ExpiresAt()
		if err := s.cfg.Authority.RecordDelivered(ctx, l.sess.sandboxID, l.acked); err != nil {
			l.log.Warn("record delivered generation", zap.Uint64("gen", l.acked), zap.Error(err))
		}
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
	if err := l.send(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Accepted{Accepted: acc}}); err != nil {
		return err
	}
	l.lastHeard = l.s.cfg.Clock.Now()
	l.log.Info("session accepted", zap.Bool("attested", cred.attested), zap.Uint64("hello_gen", hello.GetTokenGen()),
		zap.Stringer("presented", cred.presented), zap.Stringer("not_issued", cred.unissued),
		zap.Stringer("latest", latest), zap.Bool("token_sent", acc.Token != nil),
		zap.String("version", hello.GetVersion()))
	return nil
}

func (l *sessionLoop) sent(tok *auth.Token) {
	l.unacked[tok.Gen()] = tok
	l.newestSent = tok.Gen()
	l.sentAt = l.s.cfg.Clock.Now()
}

// run serves the session until it ends.
func (l *sessionLoop) run(ctx context.Context, in <-chan *sessionpb.SupervisorMessage, inErr <-chan error) error {
	hb := l.s.cfg.HeartbeatInterval
	ticker := l.s.cfg.Clock.NewTicker(hb)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			l.log.Info("session ended by the supervisor's transport", zap.Error(ctx.Err()))
			return ctx.Err()
		case err := <-inErr:
			if errors.Is(err, io.EOF) {
				// A half-close: the supervisor sends nothing more but may
				// still read. What is queued for it (the Accepted, at least)
				// leaves before the handler's return cancels the stream.
				l.log.Info("session closed by the supervisor")
				l.sess.markClosing()
				l.flush(l.s.cfg.HeartbeatInterval)
				return nil
			}
			l.log.Info("session stream failed", zap.Error(err))
			return err
		case <-l.sess.endc:
			err = reject(l.sess.endCode, l.sess.endReason)
		case m := <-in:
			l.lastHeard = l.s.cfg.Clock.Now()
			err = l.handle(ctx, m)
		case <-l.sess.push:
			err = l.deliver(ctx)
		case m := <-l.sess.out:
			err = l.send(m)
		case err = <-l.sendErr:
		case <-ticker.C():
			err = l.tick(ctx)
		}
		if err != nil {
			return l.finish(err)
		}
	}
}

// finish ends the session with err, telling the supervisor why when it is
// a rejection.
func (l *sessionLoop) finish(err error) error {
	l.sess.markClosing()
	var r *rejection
	if !errors.As(err, &r) {
		l.log.Info("session ended", zap.Error(err))
		return err
	}
	l.s.metrics.rejections.WithLabelValues(codeLabel(r.code)).Inc()
	l.log.Info("session ended", zap.String("code", codeLabel(r.code)), zap.String("reason", r.reason))
	if l.send(rejectedMessage(r)) == nil {
		l.flush(l.s.cfg.HeartbeatInterval)
	}
	return r
}

func (l *sessionLoop) handle(ctx context.Context, m *sessionpb.SupervisorMessage) error {
	switch msg := m.GetMsg().(type) {
	case *sessionpb.SupervisorMessage_Heartbeat:
		return nil
	case *sessionpb.SupervisorMessage_TokenAck:
		l.ack(ctx, msg.TokenAck.GetGen())
		return nil
	case *sessionpb.SupervisorMessage_Hello:
		return reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "second hello on an established session")
	default:
		return reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, "empty or unknown message")
	}
}

func (l *sessionLoop) ack(ctx context.Context, gen uint64) {
	tok, ok := l.unacked[gen]
	if !ok {
		if gen > l.acked {
			l.log.Warn("acknowledgement of a generation not sent on this session", zap.Uint64("gen", gen))
		}
		return
	}
	l.s.metrics.acks.Inc()
	if err := l.s.cfg.Authority.RecordDelivered(ctx, l.sess.sandboxID, gen); err != nil {
		l.log.Warn("record delivered generation", zap.Uint64("gen", gen), zap.Error(err))
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
	l.log.Debug("token acknowledged", zap.Stringer("token", tok))
}

// deliver sends the latest token if the supervisor lacks it and it has
// not been sent yet; resends are the tick's business.
func (l *sessionLoop) deliver(ctx context.Context) error {
	l.pushDue = false
	latest, err := l.s.cfg.Authority.Latest(ctx, l.sess.sandboxID)
	if err != nil {
		if errors.Is(err, ErrUnknownSandbox) {
			return reject(sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX, err.Error())
		}
		l.log.Warn("read latest token for push; retrying", zap.Error(err))
		l.pushDue = true
		return nil
	}
	if latest.Gen() <= l.acked || latest.Gen() <= l.newestSent {
		return nil
	}
	l.sent(latest)
	l.s.metrics.pushes.Inc()
	l.log.Debug("token pushed", zap.Stringer("token", latest))
	return l.sendToken(latest)
}

func (l *sessionLoop) sendToken(tok *auth.Token) error {
	return l.send(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_TokenUpdate{
		TokenUpdate: &sessionpb.TokenUpdate{Token: tok.Raw(), Gen: tok.Gen(), Jwks: l.s.cfg.Authority.JWKS()}}})
}

// tick runs every heartbeat interval: it ends a session whose peer went
// silent or whose credential expired, resends an unacknowledged push and
// sends the heartbeat.
func (l *sessionLoop) tick(ctx context.Context) error {
	hb := l.s.cfg.HeartbeatInterval
	if stalled := l.sendStalled(); stalled >= missedHeartbeats*hb {
		return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("the supervisor has not read for %s", stalled.Round(time.Millisecond)))
	}
	if silent := l.s.cfg.Clock.Now().Sub(l.lastHeard); silent >= missedHeartbeats*hb {
		return reject(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT,
			fmt.Sprintf("nothing heard from the supervisor for %s", silent.Round(time.Millisecond)))
	}
	if now := l.s.cfg.Now(); !now.Before(l.credentialExpiry) {
		return reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED,
			fmt.Sprintf("the session's credential expired at %s", l.credentialExpiry.UTC().Format(time.RFC3339)))
	}
	if l.pushDue {
		if err := l.deliver(ctx); err != nil {
			return err
		}
	}
	if tok := l.unacked[l.newestSent]; tok != nil && l.s.cfg.Clock.Now().Sub(l.sentAt) >= resendAfter*hb {
		l.sentAt = l.s.cfg.Clock.Now()
		l.s.metrics.resends.Inc()
		l.log.Debug("token resent", zap.Stringer("token", tok))
		if err := l.sendToken(tok); err != nil {
			return err
		}
	}
	return l.send(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}})
}
