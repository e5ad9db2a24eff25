package session

import (
	"errors"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

func TestHelloReturnsTokenMintedWhileDisconnected(t *testing.T) {
	for _, transport := range []string{"unix", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, envConfig{})
			target, tok := e.sandbox("sb-gap")
			if transport == "tcp" {
				target = e.tcpTarget()
			}
			src := e.newSource("sb-gap", tok)
			c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-gap", Source: src})
			eventually(t, "first session", func() bool { return e.srv.Connected("sb-gap") })

			c.stop()
			eventually(t, "session gone", func() bool { return !e.srv.Connected("sb-gap") })
			// Minted and pushed while nobody listens: the push is lost.
			gen2 := e.mint("sb-gap")
			e.srv.Push("sb-gap")

			c.start()
			eventually(t, "gen 2 in the source", func() bool { return genOf(src) == gen2.Gen() })
			eventually(t, "gen 2 recorded as delivered", func() bool { return e.authority.Delivered("sb-gap") == gen2.Gen() })
			if got := src.Current().JTI(); got != gen2.JTI() {
				t.Fatalf("source holds jti %s, want %s", got, gen2.JTI())
			}
		})
	}
}

func TestPushReachesConnectedSupervisorAndIsAcknowledged(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-push")
	src := e.newSource("sb-push", tok)
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-push", Source: src})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-push") })
	for i := 0; i < 5; i++ {
		next := e.mint("sb-push")
		e.srv.Push("sb-push")
		eventually(t, "pushed generation in the source", func() bool { return genOf(src) == next.Gen() })
		eventually(t, "pushed generation delivered", func() bool { return e.authority.Delivered("sb-push") == next.Gen() })
	}
	if got := metricValue(e.srv.metrics.pushes); got != 5 {
		t.Fatalf("pushes = %v, want 5", got)
	}
	if got := metricValue(e.srv.metrics.acks); got != 5 {
		t.Fatalf("acks = %v, want 5", got)
	}
}

func TestUnacknowledgedPushIsResent(t *testing.T) {
	const hb = 50 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb})
	_, tok := e.sandbox("sb-resend")
	r := openRaw(t, dialRaw(t, e.tcpTarget()), tok.Raw())
	r.hello("sb-resend", tok.Gen())
	// Heartbeat but never ack: the same generation comes again, no
	// sooner than two intervals later.
	defer startBeating(r, hb/2)()
	if acc := r.accepted(); acc.Token != nil {
		t.Fatalf("accepted carries a token although the supervisor holds the latest")
	}
	gen2 := e.mint("sb-resend")
	e.srv.Push("sb-resend")

	first, err := r.tokenUpdate(5 * time.Second)
	if err != nil || first.GetGen() != gen2.Gen() {
		t.Fatalf("first push: %v, %v", first, err)
	}
	sentAt := time.Now()
	second, err := r.tokenUpdate(5 * time.Second)
	if err != nil || second.GetGen() != gen2.Gen() || second.GetToken() != gen2.Raw() {
		t.Fatalf("resend: %v, %v", second, err)
	}
	if gap := time.Since(sentAt); gap < resendAfter*hb-hb/2 {
		t.Fatalf("resent after %s, want about %s", gap, resendAfter*hb)
	}
	if metricValue(e.srv.metrics.resends) < 1 {
		t.Fatal("resends metric not counted")
	}
	if got := e.authority.Delivered("sb-resend"); got != tok.Gen() {
		t.Fatalf("delivered = %d before any ack, want the presented %d", got, tok.Gen())
	}
	// An ack stops the resends.
	r.ack(gen2.Gen())
	eventually(t, "ack recorded", func() bool { return e.authority.Delivered("sb-resend") == gen2.Gen() })
	drainFor(r, hb) // a resend may have crossed the ack
	if n := countUpdatesFor(r, 4*resendAfter*hb); n != 0 {
		t.Fatalf("push resent %d times after its ack", n)
	}
}

// drainFor discards what r receives for d.
func drainFor(r *rawSession, d time.Duration) { countUpdatesFor(r, d) }

// countUpdatesFor counts the TokenUpdates r receives in d.
func countUpdatesFor(r *rawSession, d time.Duration) int {
	n := 0
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m := <-r.msgs:
			if m.GetTokenUpdate() != nil {
				n++
			}
		case <-timer.C:
			return n
		}
	}
}

func TestPushToAbsentSupervisorIsDeliveredAtNextHello(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-absent")
	gen2 := e.mint("sb-absent")
	gen3 := e.mint("sb-absent")
	e.srv.Push("sb-absent") // nobody is connected
	_ = gen2

	r := openRaw(t, dialRaw(t, target), tok.Raw())
	r.hello("sb-absent", tok.Gen())
	acc := r.accepted()
	if acc.Token == nil || acc.GetToken() != gen3.Raw() || acc.GetTokenGen() != gen3.Gen() {
		t.Fatalf("accepted token gen %d present=%v, want gen %d", acc.GetTokenGen(), acc.Token != nil, gen3.Gen())
	}
	if len(acc.GetJwks()) == 0 {
		t.Fatal("accepted carries no JWKS")
	}
	r.ack(gen3.Gen())
	eventually(t, "delivery recorded", func() bool { return e.authority.Delivered("sb-absent") == gen3.Gen() })
}

func TestNewSessionSupersedesOldAndLateEndDoesNotUnregisterIt(t *testing.T) {
	e := newEnv(t, envConfig{heartbeat: time.Second})
	target, tok := e.sandbox("sb-dup")
	rpc := dialRaw(t, target)
	old := openRaw(t, rpc, tok.Raw())
	old.hello("sb-dup", tok.Gen())
	old.accepted()

	// The old session's stream stays open on the supervisor side: its
	// handler ends after the new one registered.
	cur := openRaw(t, rpc, tok.Raw())
	cur.hello("sb-dup", tok.Gen())
	cur.accepted()
	old.expectRejected(sessionpb.RejectCode_REJECT_CODE_SESSION_REPLACED)
	old.close()

	if !e.srv.Connected("sb-dup") || e.srv.Sessions() != 1 {
		t.Fatalf("connected=%v sessions=%d after the old session ended, want the new one registered",
			e.srv.Connected("sb-dup"), e.srv.Sessions())
	}
	gen2 := e.mint("sb-dup")
	e.srv.Push("sb-dup")
	u, err := cur.tokenUpdate(5 * time.Second)
	if err != nil || u.GetGen() != gen2.Gen() {
		t.Fatalf("push to the new session: %v, %v", u, err)
	}
	if got := e.rejections(sessionpb.RejectCode_REJECT_CODE_SESSION_REPLACED); got != 1 {
		t.Fatalf("session_replaced rejections = %v, want 1", got)
	}
}

func TestGatewayEndsSessionAfterThreeMissedHeartbeats(t *testing.T) {
	const hb = 20 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb})
	target, tok := e.sandbox("sb-silent")
	r := openRaw(t, dialRaw(t, target), tok.Raw())
	r.hello("sb-silent", tok.Gen())
	r.accepted()
	start := time.Now()
	r.expectRejected(sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT)
	// The gateway counts from its own send of Accepted, a little earlier.
	if d := time.Since(start); d < (missedHeartbeats-1)*hb {
		t.Fatalf("ended after %s, before %d intervals", d, missedHeartbeats-1)
	}
	eventually(t, "unregistered", func() bool { return !e.srv.Connected("sb-silent") })
}

func TestGatewayKeepsSessionThatHeartbeats(t *testing.T) {
	const hb = 100 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb})
	target, tok := e.sandbox("sb-alive")
	src := e.newSource("sb-alive", tok)
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-alive", Source: src})
	eventually(t, "session", func() bool { ok, _, _ := c.State(); return ok })
	_, id, _ := c.State()
	time.Sleep(10 * hb)
	ok, id2, err := c.State()
	if !ok || id2 != id {
		t.Fatalf("session %s replaced by %q (connected=%v, last error %v) although both sides heartbeat", id, id2, ok, err)
	}
}

// silentGateway accepts sessions and then says nothing.
type silentGateway struct {
	sessionpb.UnimplementedSupervisorSessionServer
	connects chan struct{}
}

func (g *silentGateway) Connect(stream sessionpb.SupervisorSession_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	g.connects <- struct{}{}
	if err := stream.Send(&sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_Accepted{Accepted: &sessionpb.Accepted{
		SessionId: "silent", HeartbeatInterval: durationOf(20 * time.Millisecond)}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

func TestClientEndsSessionWhenGatewayGoesSilent(t *testing.T) {
	e := newEnv(t, envConfig{})
	g := &silentGateway{connects: make(chan struct{}, 100)}
	target := serveFake(t, e, g)
	_, tok := e.sandbox("sb-quiet")
	src := e.newSource("sb-quiet", tok)
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-quiet", Source: src})
	for i := 0; i < 2; i++ {
		select {
		case <-g.connects:
		case <-time.After(5 * time.Second):
			t.Fatalf("connect %d never came", i+1)
		}
	}
	_, _, err := c.State()
	if !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("last error %v, want ErrHeartbeatTimeout", err)
	}
}

// TestClientJudgesGatewaySilenceByItsClock gives the client a clock of
// its own: while it stands still, a silent gateway's session lasts; once
// it has moved three heartbeat intervals, the next tick ends the session.
func TestClientJudgesGatewaySilenceByItsClock(t *testing.T) {
	e := newEnv(t, envConfig{})
	g := &silentGateway{connects: make(chan struct{}, 100)}
	target := serveFake(t, e, g)
	_, tok := e.sandbox("sb-quiet")
	src := e.newSource("sb-quiet", tok)
	clock := newFakeClock()
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-quiet", Source: src, Now: clock.Now})
	select {
	case <-g.connects:
	case <-time.After(5 * time.Second):
		t.Fatal("the client never connected")
	}
	eventually(t, "session up", func() bool { ok, _, _ := c.State(); return ok })
	// Ten heartbeat intervals of real time, none on the client's clock.
	time.Sleep(200 * time.Millisecond)
	if ok, _, err := c.State(); !ok {
		t.Fatalf("session ended (%v) although the client's clock stood still", err)
	}
	clock.Add(3 * 20 * time.Millisecond)
	select {
	case <-g.connects: // the session ended, and the client reconnected
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived three heartbeat intervals of silence on the client's clock")
	}
	if _, _, err := c.State(); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("last error %v, want ErrHeartbeatTimeout", err)
	}
}

func TestSessionEndsWhenItsCredentialExpires(t *testing.T) {
	const hb = 50 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb, lifetime: 10 * time.Second})
	_, tok := e.sandbox("sb-exp")
	r := openRaw(t, dialRaw(t, e.tcpTarget()), tok.Raw())
	r.hello("sb-exp", tok.Gen())
	defer startBeating(r, hb/2)()
	r.accepted()

	// An acknowledged push moves the session's expiry to the new token's.
	e.clock.Add(8 * time.Second)
	gen2 := e.mint("sb-exp")
	e.srv.Push("sb-exp")
	if u, err := r.tokenUpdate(5 * time.Second); err != nil || u.GetGen() != gen2.Gen() {
		t.Fatalf("push: %v, %v", u, err)
	}
	r.ack(gen2.Gen())
	eventually(t, "ack recorded", func() bool { return e.authority.Delivered("sb-exp") == gen2.Gen() })
	e.clock.Add(3 * time.Second) // gen 1 expired, gen 2 has 7 s left
	time.Sleep(5 * hb)
	if !e.srv.Connected("sb-exp") {
		t.Fatal("session ended although its acknowledged token is valid")
	}
	e.clock.Add(7 * time.Second) // gen 2 expired too
	rej := r.expectRejected(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED)
	t.Logf("rejected: %s", rej.GetReason())
	eventually(t, "unregistered", func() bool { return !e.srv.Connected("sb-exp") })
}

func TestUnacknowledgedPushDoesNotExtendTheSession(t *testing.T) {
	const hb = 50 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb, lifetime: 10 * time.Second})
	_, tok := e.sandbox("sb-noack")
	r := openRaw(t, dialRaw(t, e.tcpTarget()), tok.Raw())
	r.hello("sb-noack", tok.Gen())
	defer startBeating(r, hb/2)()
	r.accepted()
	e.clock.Add(5 * time.Second)
	e.mint("sb-noack")
	e.srv.Push("sb-noack")
	if _, err := r.tokenUpdate(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(5 * time.Second)
	for {
		m := r.mustNext(5 * time.Second)
		if m.GetTokenUpdate() != nil {
			continue // resends
		}
		if m.GetRejected().GetCode() != sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED {
			t.Fatalf("got %v, want Rejected UNAUTHENTICATED", m)
		}
		break
	}
}

func TestExpiredTokenAcceptedOnAttestedSocketRefusedOnTCP(t *testing.T) {
	e := newEnv(t, envConfig{lifetime: 10 * time.Second})
	target, old := e.sandbox("sb-sleep")
	sleeper := e.newSource("sb-sleep", old) // goes to sleep holding gen 1
	e.clock.Add(72 * time.Hour)             // suspended for days
	latest := e.mint("sb-sleep")

	t.Run("tcp refuses", func(t *testing.T) {
		r := openRaw(t, dialRaw(t, e.tcpTarget()), old.Raw())
		r.hello("sb-sleep", old.Gen())
		r.expectRejected(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED)
	})
	t.Run("attested socket answers with the latest", func(t *testing.T) {
		r := openRaw(t, dialRaw(t, target), old.Raw())
		r.hello("sb-sleep", old.Gen())
		acc := r.accepted()
		if acc.GetToken() != latest.Raw() || !acc.GetTokenRejected() {
			t.Fatalf("accepted: token gen %d, token_rejected %v; want gen %d and token_rejected", acc.GetTokenGen(), acc.GetTokenRejected(), latest.Gen())
		}
	})
	t.Run("supervisor on the attested socket recovers", func(t *testing.T) {
		c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-sleep", Source: sleeper})
		eventually(t, "latest token in the source", func() bool { return genOf(sleeper) == latest.Gen() })
		eventually(t, "delivered", func() bool { return e.authority.Delivered("sb-sleep") == latest.Gen() })
		c.stop()
	})
}

func TestAttestedSocketAcceptsSupervisorWithoutToken(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-new")
	src := e.newSource("sb-new", nil)
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-new", Source: src})
	eventually(t, "first token from the session", func() bool { return genOf(src) == tok.Gen() })

	// Without a token, the shared listener refuses.
	r := openRaw(t, dialRaw(t, e.tcpTarget()), "")
	r.hello("sb-new", 0)
	r.expectRejected(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED)
}

// TestUnissuedGenerationOnAttestedSocketIsAnsweredWithAHigherOne: the
// supervisor holds gen 5, signed by the gateway's key, but the gateway's
// store went back to gen 2 (a backup restored). On its own socket it is
// answered at once with a generation above 5, never with one it may
// already hold under another jti; on the shared listener it is refused as
// unauthenticated, and recovers from the directory.
func TestUnissuedGenerationOnAttestedSocketIsAnsweredWithAHigherOne(t *testing.T) {
	setup := func(t *testing.T, id string) (*env, string, *source.Source, *auth.Token, *auth.Token) {
		e := newEnv(t, envConfig{})
		target, _ := e.sandbox(id)
		restored := e.mint(id)
		future, err := e.issuer.Mint(id, 5) // minted before the restore
		if err != nil {
			t.Fatal(err)
		}
		src := e.newSource(id, future)
		if err := src.Offer(restored.Raw(), e.jwks(), source.OriginDir); err == nil {
			t.Fatal("source took a lower generation before any rejection")
		}
		return e, target, src, restored, future
	}
	t.Run("attested socket", func(t *testing.T) {
		e, target, _, _, future := setup(t, "sb-restored")
		r := openRaw(t, dialRaw(t, target), future.Raw())
		r.hello("sb-restored", future.Gen())
		acc := r.accepted()
		if acc.GetTokenGen() <= future.Gen() || acc.Token == nil || !acc.GetTokenRejected() {
			t.Fatalf("accepted: token gen %d (sent %v), token_rejected %v; want a token above gen %d, token_rejected",
				acc.GetTokenGen(), acc.Token != nil, acc.GetTokenRejected(), future.Gen())
		}
		// Shown the same forgotten token again, the authority does not
		// mint again: the answer is already above it.
		r2 := openRaw(t, dialRaw(t, target), future.Raw())
		r2.hello("sb-restored", future.Gen())
		if again := r2.accepted(); again.GetTokenGen() != acc.GetTokenGen() {
			t.Fatalf("second hello with gen %d answered with gen %d, want %d", future.Gen(), again.GetTokenGen(), acc.GetTokenGen())
		}
		if got := e.rejections(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED); got != 0 {
			t.Fatalf("%v unauthenticated rejections on the attested socket, want 0", got)
		}
	})
	t.Run("supervisor on the attested socket", func(t *testing.T) {
		e, target, src, _, future := setup(t, "sb-restored")
		e.startClient(ClientConfig{Target: target, SandboxID: "sb-restored", Source: src})
		eventually(t, "a generation above the forgotten one in the source", func() bool { return genOf(src) > future.Gen() })
		eventually(t, "delivered", func() bool { return e.authority.Delivered("sb-restored") == genOf(src) })
	})
	t.Run("shared listener, then the directory", func(t *testing.T) {
		e, _, src, restored, _ := setup(t, "sb-restored")
		c := e.startClient(ClientConfig{Target: e.tcpTarget(), SandboxID: "sb-restored", Source: src})
		eventually(t, "unauthenticated rejection", func() bool {
			_, _, err := c.State()
			var rej *RejectedError
			return errors.As(err, &rej) && rej.Code == sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED
		})
		// The rejection made the source take a lower generation, as the
		// directory offers it; the next session is accepted.
		if err := src.Offer(restored.Raw(), e.jwks(), source.OriginDir); err != nil {
			t.Fatalf("source refused the restored generation after the rejection: %v", err)
		}
		eventually(t, "session with the restored generation", func() bool { ok, _, _ := c.State(); return ok })
	})
}

func TestClientAcknowledgesOnlyTokensItsSourceTook(t *testing.T) {
	const hb = 50 * time.Millisecond
	e := newEnv(t, envConfig{heartbeat: hb})
	target, tok := e.sandbox("sb-picky")
	// A stand-in source that holds gen 1 and refuses everything else.
	src := newTestSource("sb-picky", e.issuer.Verifier())
	if err := src.Offer(tok.Raw(), e.jwks(), "test"); err != nil {
		t.Fatal(err)
	}
	src.refuseAll = true
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-picky", Source: src})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-picky") })
	e.mint("sb-picky")
	e.srv.Push("sb-picky")
	eventually(t, "refused push resent", func() bool { return metricValue(e.srv.metrics.resends) >= 2 })
	if got := e.authority.Delivered("sb-picky"); got != tok.Gen() {
		t.Fatalf("delivered = %d, want %d: a refused token was acknowledged", got, tok.Gen())
	}
	if got := metricValue(e.srv.metrics.acks); got != 0 {
		t.Fatalf("acks = %v, want 0", got)
	}
}

// A supervisor (or grpcurl's one-message form) that sends its Hello and
// half-closes must still read the Accepted queued for it: the handler
// flushes before it returns on EOF.
func TestHelloThenHalfCloseAlwaysGetsAccepted(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-eof")
	rpc := dialRaw(t, target)
	for i := 0; i < 50; i++ {
		r := openRaw(t, rpc, tok.Raw())
		r.hello("sb-eof", 0)
		if err := r.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		m, err := r.next(5 * time.Second)
		if err != nil {
			t.Fatalf("try %d: no message after Hello and half-close: %v", i, err)
		}
		acc := m.GetAccepted()
		if acc == nil || acc.GetToken() != tok.Raw() {
			t.Fatalf("try %d: got %v, want Accepted with the token", i, m)
		}
		r.close()
	}
}
