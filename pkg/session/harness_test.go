package session

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
	"github.com/sandkey/sandkey/pkg/testclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newFakeClock is the injected clock of the issuer, verifier and server.
func newFakeClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC))
}

type envConfig struct {
	heartbeat    time.Duration
	helloTimeout time.Duration
	lifetime     time.Duration
	onExit       func(ExitReport)
	verbose      bool
	logger       *zap.Logger // zap.NewNop() when nil (and not verbose)
	clock        Clock       // the server's heartbeat clock; the real one when nil
	// wrap, when set, stands between the server and the test authority.
	wrap func(TestAuthority) TestAuthority
}

// TestAuthority is what this package's tests need of an authority: a
// sessiontest.MemAuthority. These tests, in package session, cannot import
// sessiontest (it imports session); sessiontest_test.go, in package
// session_test, which can, sets NewTestAuthority before any test runs.
type TestAuthority interface {
	Authority
	Mint(sandboxID string) (*auth.Token, error)
	Delivered(sandboxID string) uint64
	Forget(sandboxID string)
}

// NewTestAuthority returns an empty authority minting with issuer and
// verifying against keys (sessiontest.NewMemAuthority).
var NewTestAuthority func(issuer *auth.Issuer, keys *auth.KeySet) TestAuthority

// env is a gateway: authority, session server, one gRPC server serving a
// shared TCP listener and per-sandbox unix sockets.
type env struct {
	t         testing.TB
	clock     *testclock.Clock
	keys      *auth.KeySet
	issuer    *auth.Issuer
	authority TestAuthority
	srv       *Server
	grpc      *grpc.Server
	listeners *Listeners
	reg       *prometheus.Registry
	dir       string
	tcpAddr   string
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	if cfg.heartbeat == 0 {
		cfg.heartbeat = 200 * time.Millisecond
	}
	if cfg.helloTimeout == 0 {
		cfg.helloTimeout = time.Second
	}
	if cfg.lifetime == 0 {
		cfg.lifetime = time.Hour
	}
	clock := newFakeClock()
	key, err := auth.GenerateKey(rand.Reader, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeySet(key)
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Keys: keys, Issuer: "https://gateway.test", Audience: "sandkey",
		TrustDomain: "test.sandkey", Lifetime: cfg.lifetime, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	logger := zap.NewNop()
	switch {
	case cfg.verbose:
		logger = zaptest.NewLogger(t)
	case cfg.logger != nil:
		logger = cfg.logger
	}
	// Unix socket paths are limited to 108 bytes: keep them short.
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: clock, keys: keys, issuer: issuer, authority: NewTestAuthority(issuer, keys),
		reg: prometheus.NewRegistry(), dir: dir}
	if cfg.wrap != nil {
		e.authority = cfg.wrap(e.authority)
	}
	e.srv = NewServer(ServerConfig{Authority: e.authority, HeartbeatInterval: cfg.heartbeat, HelloTimeout: cfg.helloTimeout,
		Now: clock.Now, Clock: cfg.clock, Logger: logger, Registerer: e.reg, OnExit: cfg.onExit})
	e.grpc = grpc.NewServer(ServerOptions(nil)...)
	e.srv.Register(e.grpc)
	e.listeners = NewListeners(e.grpc, logger)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tcpAddr = tcp.Addr().String()
	if err := e.listeners.AddShared("tcp", tcp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.srv.Close()
		e.listeners.Close()
		e.grpc.Stop()
		_ = os.RemoveAll(dir)
	})
	return e
}

// sandbox creates a sandbox with a first token and its socket; it returns
// the unix target and the token.
func (e *env) sandbox(id string) (string, *auth.Token) {
	e.t.Helper()
	tok, err := e.authority.Mint(id)
	if err != nil {
		e.t.Fatal(err)
	}
	path, err := e.listeners.AddSandbox(filepath.Join(e.dir, id), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return "unix://" + path, tok
}

func (e *env) mint(id string) *auth.Token {
	e.t.Helper()
	tok, err := e.authority.Mint(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) jwks() []byte { return e.authority.JWKS() }

func (e *env) tcpTarget() string { return "tcp://" + e.tcpAddr }

func (e *env) rejections(code sessionpb.RejectCode) float64 {
	return metricValue(e.srv.metrics.rejections.WithLabelValues(codeLabel(code)))
}

func metricValue(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}

// newSource returns the supervisor's real token source for sandboxID,
// fed by the session only, holding tok (if any).
func (e *env) newSource(sandboxID string, tok *auth.Token) *source.Source {
	e.t.Helper()
	src, err := source.New(context.Background(), source.Config{SandboxID: sandboxID,
		Issuer: "https://gateway.test", Audience: "sandkey", TrustDomain: "test.sandkey", Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = src.Close() })
	if tok != nil {
		if err := src.Offer(tok.Raw(), e.jwks(), "test"); err != nil {
			e.t.Fatal(err)
		}
	}
	return src
}

// genOf returns the generation src holds, 0 if none.
func genOf(src TokenSource) uint64 {
	if t := src.Current(); t != nil {
		return t.Gen()
	}
	return 0
}

// runningClient is a Client whose Run goroutine the test owns.
type runningClient struct {
	*Client
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startClient(cfg ClientConfig) *runningClient {
	e.t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond}
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = "instance-1"
	}
	c, err := NewClient(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	rc := &runningClient{Client: c}
	rc.start()
	e.t.Cleanup(func() {
		rc.stop()
		_ = c.Close()
	})
	return rc
}

func (rc *runningClient) start() {
	ctx, cancel := context.WithCancel(context.Background())
	rc.cancel = cancel
	rc.done = make(chan error, 1)
	go func() { rc.done <- rc.Run(ctx) }()
}

func (rc *runningClient) stop() {
	if rc.cancel == nil {
		return
	}
	rc.cancel()
	<-rc.done
	rc.cancel = nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// rawSession drives the protocol by hand, as a supervisor that may
// misbehave.
type rawSession struct {
	t      testing.TB
	stream sessionpb.SupervisorSession_ConnectClient
	cancel context.CancelFunc
	msgs   chan *sessionpb.GatewayMessage
	err    chan error
	wg     sync.WaitGroup
	sendMu sync.Mutex // a stream's Send is not safe for concurrent use
}

// dialRaw connects to target without any credentials of the package's
// client; calls carry what the test puts in their metadata.
func dialRaw(t testing.TB, target string) sessionpb.SupervisorSessionClient {
	t.Helper()
	conn, err := Dial(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return sessionpb.NewSupervisorSessionClient(conn)
}

// callContext returns a context carrying bearer (if not empty) and the
// sandbox metadata (if not empty).
func callContext(ctx context.Context, bearer, sandboxID string) context.Context {
	var kv []string
	if bearer != "" {
		kv = append(kv, "authorization", "Bearer "+bearer)
	}
	if sandboxID != "" {
		kv = append(kv, SandboxIDMetadata, sandboxID)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func openRaw(t testing.TB, rpc sessionpb.SupervisorSessionClient, bearer string) *rawSession {
	t.Helper()
	ctx, cancel := context.WithCancel(callContext(context.Background(), bearer, ""))
	stream, err := rpc.Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &rawSession{t: t, stream: stream, cancel: cancel, msgs: make(chan *sessionpb.GatewayMessage, 1024), err: make(chan error, 1)}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				r.err <- err
				return
			}
			r.msgs <- m
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *rawSession) close() {
	r.cancel()
	r.wg.Wait()
}

func (r *rawSession) send(m *sessionpb.SupervisorMessage) {
	r.t.Helper()
	if err := r.trySend(m); err != nil {
		r.t.Fatalf("send %v: %v", m, err)
	}
}

func (r *rawSession) trySend(m *sessionpb.SupervisorMessage) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.stream.Send(m)
}

// startBeating sends heartbeats on r until the returned func is called.
func startBeating(r *rawSession, hb time.Duration) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(hb)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = r.trySend(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}})
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (r *rawSession) hello(sandboxID string, gen uint64) {
	r.t.Helper()
	r.send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: sandboxID, InstanceId: "raw", TokenGen: gen, Version: "test"}}})
}

func (r *rawSession) ack(gen uint64) {
	r.t.Helper()
	r.send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_TokenAck{TokenAck: &sessionpb.TokenAck{Gen: gen}}})
}

var errTimeout = errors.New("timed out")

// next returns the next message that is not a heartbeat.
func (r *rawSession) next(timeout time.Duration) (*sessionpb.GatewayMessage, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-r.msgs:
			if m.GetHeartbeat() != nil {
				continue
			}
			return m, nil
		case err := <-r.err:
			r.err <- err
			// Messages received before the stream ended come first.
			select {
			case m := <-r.msgs:
				if m.GetHeartbeat() != nil {
					continue
				}
				return m, nil
			default:
				return nil, err
			}
		case <-timer.C:
			return nil, errTimeout
		}
	}
}

func (r *rawSession) mustNext(timeout time.Duration) *sessionpb.GatewayMessage {
	r.t.Helper()
	m, err := r.next(timeout)
	if err != nil {
		r.t.Fatalf("next message: %v", err)
	}
	return m
}

func (r *rawSession) accepted() *sessionpb.Accepted {
	r.t.Helper()
	m := r.mustNext(5 * time.Second)
	acc := m.GetAccepted()
	if acc == nil {
		r.t.Fatalf("got %v, want Accepted", m)
	}
	return acc
}

func (r *rawSession) expectRejected(code sessionpb.RejectCode) *sessionpb.Rejected {
	r.t.Helper()
	m := r.mustNext(5 * time.Second)
	rej := m.GetRejected()
	if rej == nil || rej.GetCode() != code {
		r.t.Fatalf("got %v, want Rejected %s", m, code)
	}
	// The gateway closes the stream right after.
	if _, err := r.next(5 * time.Second); err == nil || errors.Is(err, errTimeout) {
		r.t.Fatalf("stream still open after Rejected %s: %v", code, err)
	}
	return rej
}

// tokenUpdate waits for the next TokenUpdate.
func (r *rawSession) tokenUpdate(timeout time.Duration) (*sessionpb.TokenUpdate, error) {
	m, err := r.next(timeout)
	if err != nil {
		return nil, err
	}
	if u := m.GetTokenUpdate(); u != nil {
		return u, nil
	}
	return nil, fmt.Errorf("got %v, want TokenUpdate", m)
}
