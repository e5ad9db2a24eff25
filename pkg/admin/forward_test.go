package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/test/binaries"
)

const forwardWait = 20 * time.Second

// holderDouble stands in for the store's answer to "which replica holds
// this session", which needs replicas sharing a Postgres store (the
// replicas acceptance tests run that for real): it names one replica as
// the holder of every sandbox, and counts the questions.
type holderDouble struct {
	self   string
	holder gateway.Holder
	asked  atomic.Int32
}

func (h *holderDouble) SessionHolder(context.Context, string) (gateway.Holder, error) {
	h.asked.Add(1)
	return h.holder, nil
}

func (h *holderDouble) SessionHolders(_ context.Context, ids []string) (map[string]gateway.Holder, error) {
	h.asked.Add(1)
	held := make(map[string]gateway.Holder, len(ids))
	for _, id := range ids {
		held[id] = h.holder
	}
	return held, nil
}

func (h *holderDouble) ReplicaID() string { return h.self }

// elsewhere is a holder double naming the replica id at addr as the
// holder of every session.
func elsewhere(self, id, addr string) *holderDouble {
	return &holderDouble{self: self, holder: gateway.Holder{ReplicaID: id, AdminAddr: addr, Connected: true}}
}

// replica is a real gateway (SQLite store, process driver running the
// real supervisor) with its operator API on a TLS TCP listener, as
// `gateway serve --admin-tcp` runs it.
type replica struct {
	gw    *gateway.Gateway
	srv   *grpc.Server
	l     net.Listener
	addr  string
	files tlsFiles
}

// newReplica opens the gateway and its listener; serve starts serving.
func newReplica(t *testing.T, files tlsFiles) *replica {
	t.Helper()
	// Sandbox sockets live under the state directory: keep its path short.
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	state, err := os.MkdirTemp(base, "skadm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	log := zaptest.NewLogger(t)
	proc, err := process.New(process.Config{SupervisorPath: binaries.Supervisor, StateRoot: filepath.Join(state, "process"), Logger: log.Named("process")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Close() }) // the gateway does not own its drivers
	ctx, cancel := context.WithCancel(context.Background())
	gw, err := gateway.Open(ctx, gateway.Config{
		StateDir: filepath.Join(state, "state"), StopGrace: 2 * time.Second,
		Drivers: map[string]driver.Driver{process.Name: proc}, DefaultDriver: process.Name,
		Logger: log.Named("gateway"),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		gw.Serve(ctx)
	}()
	srv, l, err := ListenTCP("127.0.0.1:0", TCPConfig{CertFile: files.cert, KeyFile: files.key, TokenFile: files.token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The process driver leaves sandboxes running when the gateway
		// closes: none may outlive the test.
		all, _ := gw.List(context.Background())
		for _, sb := range all {
			if err := gw.Delete(context.Background(), sb.ID); err != nil {
				t.Errorf("clean up sandbox %s: %v", sb.Name, err)
			}
		}
		srv.Stop()
		l.Close()
		cancel()
		wg.Wait()
		gw.Close()
	})
	return &replica{gw: gw, srv: srv, l: l, addr: l.Addr().String(), files: files}
}

// serve serves the operator API with opts, and peers that trust the
// replica's own certificate unless opts give others.
func (r *replica) serve(t *testing.T, opts ...Option) {
	t.Helper()
	peers, err := NewPeers(PeerConfig{TokenFile: r.files.token, PinFile: r.files.cert})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the server stops before its peers close.
	t.Cleanup(func() { peers.Close() })
	Register(r.srv, r.gw, zaptest.NewLogger(t).Named("admin"), append([]Option{WithPeers(peers)}, opts...)...)
	serve(t, r.srv, r.l)
}

// client is an operator's client of the replica.
func (r *replica) client(t *testing.T) adminpb.AdminClient {
	return dialForTest(t, r.addr, DialOptions{TokenFile: r.files.token, CAFile: r.files.cert})
}

// create creates sandbox name running a long sleep, started when start.
func (r *replica) create(t *testing.T, name string, start bool) gateway.Sandbox {
	t.Helper()
	sb, err := r.gw.Create(context.Background(), gateway.CreateRequest{
		Name: name, Spec: gateway.Spec{Command: []string{"sleep", "3600"}}, Start: start,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// awaitConnected waits for the supervisor of sandbox name to connect.
func (r *replica) awaitConnected(t *testing.T, name string) gateway.Sandbox {
	t.Helper()
	deadline := time.Now().Add(forwardWait)
	for {
		sb, err := r.gw.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if sb.Connected && sb.DeliveredGen > 0 {
			return sb
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: supervisor not connected within %s: %+v", name, forwardWait, sb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// execResult is what an exec sent back.
type execResult struct {
	stdout, stderr string
	exit           *adminpb.ExecExit
	err            error
}

func runExecSandbox(t *testing.T, c adminpb.AdminClient, req *adminpb.ExecSandboxRequest) execResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
	defer cancel()
	var res execResult
	s, err := c.ExecSandbox(ctx, req)
	if err != nil {
		res.err = err
		return res
	}
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		res.stdout += string(m.GetStdout())
		res.stderr += string(m.GetStderr())
		if m.GetExit() != nil {
			res.exit = m.GetExit()
		}
	}
}

// interactive is an interactive Exec call of the test.
type interactive struct {
	stream grpc.BidiStreamingClient[adminpb.ExecInput, adminpb.ExecSandboxResponse]
	out    strings.Builder
	exit   *adminpb.ExecExit
}

func startInteractive(t *testing.T, c adminpb.AdminClient, start *adminpb.ExecStart) *interactive {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
	t.Cleanup(cancel)
	s, err := c.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	return &interactive{stream: s}
}

func (x *interactive) send(t *testing.T, in *adminpb.ExecInput) {
	t.Helper()
	if err := x.stream.Send(in); err != nil {
		t.Fatalf("send %v: %v", in, err)
	}
}

// await reads output until it holds want, or the call ends (then returns
// how: nil at a clean end).
func (x *interactive) await(t *testing.T, want string) error {
	t.Helper()
	for want == "" || !strings.Contains(x.out.String(), want) {
		m, err := x.stream.Recv()
		if errors.Is(err, io.EOF) {
			if want != "" {
				t.Fatalf("exec ended without output %q; had %q", want, x.out.String())
			}
			return nil
		}
		if err != nil {
			return err
		}
		x.out.Write(m.GetStdout())
		x.out.Write(m.GetStderr())
		if m.GetExit() != nil {
			x.exit = m.GetExit()
		}
	}
	return nil
}

func stdin(s string) *adminpb.ExecInput {
	return &adminpb.ExecInput{Msg: &adminpb.ExecInput_Stdin{Stdin: []byte(s)}}
}

// TestForwardsSessionCallsToTheReplicaHoldingTheSession runs two real
// gateways: "web" runs on the second, whose supervisor session it holds;
// the first knows the sandbox (as replicas sharing a store do) but its
// holder lookup names the second, so what needs the session is answered
// there, through the first.
func TestForwardsSessionCallsToTheReplicaHoldingTheSession(t *testing.T) {
	files := writeTLSFiles(t) // one certificate for both, as from one Secret
	a, b := newReplica(t, files), newReplica(t, files)
	b.serve(t)
	holders := elsewhere("replica-a", b.gw.ReplicaID(), b.addr)
	a.serve(t, WithHolders(holders))
	a.create(t, "web", false)
	b.create(t, "web", true)
	b.awaitConnected(t, "web")
	c := a.client(t)

	t.Run("exec streams the holder's output and exit code", func(t *testing.T) {
		res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web",
			Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
		if res.err != nil || res.stdout != "out\n" || res.stderr != "err\n" || res.exit.GetCode() != 3 {
			t.Fatalf("forwarded exec: stdout %q, stderr %q, exit %v, err %v", res.stdout, res.stderr, res.exit, res.err)
		}
		res = runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web",
			Argv: []string{"tr", "a-z", "A-Z"}, Stdin: []byte("hello"), HasStdin: true})
		if res.err != nil || res.stdout != "HELLO" || res.exit.GetCode() != 0 {
			t.Fatalf("forwarded exec with stdin: stdout %q, exit %v, err %v", res.stdout, res.exit, res.err)
		}
	})

	t.Run("interactive exec carries stdin, resizes and the exit code", func(t *testing.T) {
		x := startInteractive(t, c, &adminpb.ExecStart{
			Request: &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"sh"}},
			Stdin:   true, Tty: true, Window: &adminpb.WindowSize{Rows: 24, Cols: 80},
		})
		x.send(t, stdin("stty size\n"))
		if err := x.await(t, "24 80"); err != nil {
			t.Fatal(err)
		}
		x.send(t, &adminpb.ExecInput{Msg: &adminpb.ExecInput_Resize{Resize: &adminpb.WindowSize{Rows: 40, Cols: 100}}})
		x.send(t, stdin("stty size\n"))
		if err := x.await(t, "40 100"); err != nil {
			t.Fatal(err)
		}
		x.send(t, stdin("exit 5\n"))
		if err := x.await(t, ""); err != nil || x.exit.GetCode() != 5 {
			t.Fatalf("interactive exec ended with exit %v, err %v; output %q", x.exit, err, x.out.String())
		}
	})

	t.Run("interactive exec half-closes stdin at the holder", func(t *testing.T) {
		x := startInteractive(t, c, &adminpb.ExecStart{
			Request: &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"sh", "-c", "cat; exit 4"}},
			Stdin:   true,
		})
		x.send(t, stdin("piped "))
		x.send(t, stdin("input"))
		if err := x.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := x.await(t, ""); err != nil || x.out.String() != "piped input" || x.exit.GetCode() != 4 {
			t.Fatalf("exec after half-close: output %q, exit %v, err %v", x.out.String(), x.exit, err)
		}
	})

	t.Run("rotate mints at the holder, which delivers it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
		defer cancel()
		before, err := b.gw.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.RotateSandbox(ctx, &adminpb.RotateSandboxRequest{Sandbox: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetGen() != before.LatestGen+1 || !resp.GetWritten() {
			t.Fatalf("forwarded rotate = %v, want generation %d written", resp, before.LatestGen+1)
		}
		// The holder pushed it over the session it holds.
		for deadline := time.Now().Add(forwardWait); ; time.Sleep(20 * time.Millisecond) {
			if after, _ := b.gw.Get(ctx, "web"); after.DeliveredGen >= resp.GetGen() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the holder's supervisor never acknowledged generation %d", resp.GetGen())
			}
		}
		if atA, _ := a.gw.Get(ctx, "web"); atA.LatestGen != 0 {
			t.Errorf("the forwarding replica minted generation %d itself", atA.LatestGen)
		}
	})

	t.Run("get and list say connected and name the holder", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
		defer cancel()
		sb, err := c.GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: "web"})
		if err != nil || !sb.GetConnected() || sb.GetReplicaId() != b.gw.ReplicaID() {
			t.Fatalf("get through the other replica: connected %v, replica %q (%v); want connected at %q",
				sb.GetConnected(), sb.GetReplicaId(), err, b.gw.ReplicaID())
		}
		list, err := c.ListSandboxes(ctx, &adminpb.ListSandboxesRequest{})
		if err != nil || len(list.GetSandboxes()) != 1 || list.GetSandboxes()[0].GetReplicaId() != b.gw.ReplicaID() {
			t.Fatalf("list through the other replica = %v (%v)", list, err)
		}
		b.create(t, "idle", false)
		atB, err := b.client(t).ListSandboxes(ctx, &adminpb.ListSandboxesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range atB.GetSandboxes() {
			switch sb.GetName() {
			case "web":
				if !sb.GetConnected() || sb.GetReplicaId() != b.gw.ReplicaID() {
					t.Errorf("holder lists web as connected %v at %q; want its own id %q", sb.GetConnected(), sb.GetReplicaId(), b.gw.ReplicaID())
				}
			case "idle":
				if sb.GetConnected() || sb.GetReplicaId() != "" {
					t.Errorf("a sandbox without a session: connected %v, replica %q", sb.GetConnected(), sb.GetReplicaId())
				}
			}
		}
	})
}

// TestForwardedCallsAreAnsweredWhereTheyArrive: two replicas that each
// name the other as the holder must not pass a call back and forth; the
// second answers it itself (its sandbox has no session: not connected).
func TestForwardedCallsAreAnsweredWhereTheyArrive(t *testing.T) {
	files := writeTLSFiles(t)
	a, b := newReplica(t, files), newReplica(t, files)
	toB := elsewhere("replica-a", "replica-b", b.addr)
	toA := elsewhere("replica-b", "replica-a", a.addr)
	a.serve(t, WithHolders(toB))
	b.serve(t, WithHolders(toA))
	a.create(t, "web", false)
	b.create(t, "web", false)
	c := a.client(t)

	res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	if status.Code(res.err) != codes.FailedPrecondition || !strings.Contains(res.err.Error(), "no session") {
		t.Fatalf("exec between replicas naming each other: %v, want the second's FailedPrecondition (no session)", res.err)
	}
	x := startInteractive(t, c, &adminpb.ExecStart{Request: &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"sh"}}, Stdin: true})
	if err := x.await(t, ""); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("interactive exec between replicas naming each other: %v, want FailedPrecondition", err)
	}
	if got := toA.asked.Load(); got != 0 {
		t.Errorf("the replica a call was forwarded to looked for its holder %d times; want none", got)
	}
	if got := toB.asked.Load(); got != 2 {
		t.Errorf("the first replica looked for the holder %d times; want once a call", got)
	}
}

// forwardingReplica is a real gateway knowing sandbox "web", whose holder
// lookup names a peer at addr, with peers built from cfg.
func forwardingReplica(t *testing.T, addr string, cfg func(f tlsFiles) PeerConfig) (*replica, adminpb.AdminClient) {
	t.Helper()
	a := newReplica(t, writeTLSFiles(t))
	peers, err := NewPeers(cfg(a.files))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peers.Close() })
	Register(a.srv, a.gw, zaptest.NewLogger(t), WithPeers(peers), WithHolders(elsewhere("replica-a", "replica-b", addr)))
	serve(t, a.srv, a.l)
	a.create(t, "web", false)
	return a, a.client(t)
}

func rotateErr(c adminpb.AdminClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
	defer cancel()
	_, err := c.RotateSandbox(ctx, &adminpb.RotateSandboxRequest{Sandbox: "web"})
	return err
}

func TestForwardingPassesThePeersRefusalOfTheTokenOn(t *testing.T) {
	peer := writeTLSFiles(t)
	addr := serveStub(t, peer)
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	writeFile(t, wrong, []byte("not-the-replicas-shared-token"), 0o600)
	_, c := forwardingReplica(t, addr, func(tlsFiles) PeerConfig { return PeerConfig{TokenFile: wrong, CAFile: peer.cert} })

	res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	for op, err := range map[string]error{"exec": res.err, "rotate": rotateErr(c)} {
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "invalid admin token") ||
			!IsHolderError(status.Convert(err)) {
			t.Errorf("%s with a token the peer refuses: %v, want Unauthenticated naming %s", op, err, addr)
		}
	}
}

func TestForwardingToAnUnreachablePeerIsUnavailableNamingIt(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, c := forwardingReplica(t, addr, func(f tlsFiles) PeerConfig { return PeerConfig{TokenFile: f.token, PinFile: f.cert} })

	res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	x := startInteractive(t, c, &adminpb.ExecStart{Request: &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"sh"}}, Stdin: true})
	for op, err := range map[string]error{"exec": res.err, "interactive exec": x.await(t, ""), "rotate": rotateErr(c)} {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "replica-b") ||
			!IsHolderError(status.Convert(err)) {
			t.Errorf("%s for a session held by an unreachable replica: %v, want Unavailable naming replica-b at %s", op, err, addr)
		}
		if err != nil && strings.Contains(err.Error(), "another") {
			t.Errorf("%s: %q sends the caller elsewhere", op, err)
		}
	}
}

func TestForwardingRefusesAPeerWhoseCertificateIsNotThePinnedOne(t *testing.T) {
	other := writeTLSFiles(t) // the peer's certificate is not ours
	addr := serveStub(t, other)
	_, c := forwardingReplica(t, addr, func(f tlsFiles) PeerConfig { return PeerConfig{TokenFile: f.token, PinFile: f.cert} })

	res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	if status.Code(res.err) != codes.Unavailable || !strings.Contains(res.err.Error(), addr) || !strings.Contains(res.err.Error(), "pinned") {
		t.Fatalf("exec at a peer with another certificate: %v, want Unavailable naming %s and the pin", res.err, addr)
	}
}

func TestForwardingTrustsPeersSignedByThePeerCA(t *testing.T) {
	other := writeTLSFiles(t) // self-signed: its own CA
	addr := serveStub(t, other)
	_, c := forwardingReplica(t, addr, func(f tlsFiles) PeerConfig { return PeerConfig{TokenFile: f.token, CAFile: other.cert} })

	// The stub answers every exec with "hi" and exit 7.
	res := runExecSandbox(t, c, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	if res.err != nil || res.stdout != "hi\n" || res.exit.GetCode() != 7 {
		t.Fatalf("exec at a peer the --peer-ca signed: stdout %q, exit %v, err %v", res.stdout, res.exit, res.err)
	}
}

func TestForwardingWithoutAWayToTheHolderIsUnavailableSayingWhy(t *testing.T) {
	tests := []struct {
		name  string
		addr  string
		peers bool
		want  string
	}{
		{"holder advertises no address", "", true, "advertises no operator API address"},
		{"this gateway has no peers", "127.0.0.1:7444", false, "serves no --admin-tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newReplica(t, writeTLSFiles(t))
			opts := []Option{WithHolders(elsewhere("replica-a", "replica-b", tt.addr))}
			if tt.peers {
				peers, err := NewPeers(PeerConfig{TokenFile: a.files.token, PinFile: a.files.cert})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { peers.Close() })
				opts = append(opts, WithPeers(peers))
			}
			Register(a.srv, a.gw, zaptest.NewLogger(t), opts...)
			serve(t, a.srv, a.l)
			a.create(t, "web", false)
			err := rotateErr(a.client(t))
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "replica-b") {
				t.Fatalf("rotate: %v, want Unavailable naming replica-b and saying %q", err, tt.want)
			}
		})
	}
}
