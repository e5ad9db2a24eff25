package session

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// serveFake serves impl on a unix socket of its own; it returns the target.
func serveFake(t *testing.T, e *env, impl sessionpb.SupervisorSessionServer) string {
	t.Helper()
	path := filepath.Join(e.dir, "fake.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	sessionpb.RegisterSupervisorSessionServer(g, impl)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return "unix://" + path
}

func TestSandboxCannotSessionAsAnother(t *testing.T) {
	e := newEnv(t, envConfig{})
	targetA, tokA := e.sandbox("sb-a")
	_, tokB := e.sandbox("sb-b")
	cases := []struct {
		name   string
		target string
		bearer string
		hello  string
		want   sessionpb.RejectCode
	}{
		{"A's socket, hello for B", targetA, "", "sb-b", sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO},
		{"A's socket, B's token and hello for B", targetA, tokB.Raw(), "sb-b", sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO},
		{"A's socket, B's token and hello for A", targetA, tokB.Raw(), "sb-a", sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED},
		{"TCP, A's token and hello for B", e.tcpTarget(), tokA.Raw(), "sb-b", sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED},
		{"TCP, garbage token", e.tcpTarget(), "not.a.token", "sb-a", sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED},
		{"TCP, unknown sandbox", e.tcpTarget(), tokA.Raw(), "sb-zz", sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := openRaw(t, dialRaw(t, tc.target), tc.bearer)
			r.hello(tc.hello, 1)
			r.expectRejected(tc.want)
			if e.srv.Connected("sb-b") {
				t.Fatal("a session for sb-b exists")
			}
		})
	}
}

func TestPushForOneSandboxNeverReachesAnother(t *testing.T) {
	e := newEnv(t, envConfig{})
	targetA, tokA := e.sandbox("sb-a")
	_, tokB := e.sandbox("sb-b")
	a := openRaw(t, dialRaw(t, targetA), tokA.Raw())
	a.hello("sb-a", tokA.Gen())
	a.accepted()
	b := openRaw(t, dialRaw(t, e.tcpTarget()), tokB.Raw())
	b.hello("sb-b", tokB.Gen())
	b.accepted()
	defer startBeating(a, 50*time.Millisecond)()
	defer startBeating(b, 50*time.Millisecond)()

	newB := e.mint("sb-b")
	e.srv.Push("sb-b")
	e.srv.Push("sb-a") // nothing new for A: nothing is sent
	if u, err := b.tokenUpdate(5 * time.Second); err != nil || u.GetToken() != newB.Raw() {
		t.Fatalf("B's push: %v, %v", u, err)
	}
	if m, err := a.next(200 * time.Millisecond); !errors.Is(err, errTimeout) {
		t.Fatalf("A received %v, %v; want nothing", m, err)
	}
}

func TestExecOutputCannotFeedAnotherSandboxesExec(t *testing.T) {
	e := newEnv(t, envConfig{})
	targetA, tokA := e.sandbox("sb-a")
	_, tokB := e.sandbox("sb-b")
	b := openRaw(t, dialRaw(t, e.tcpTarget()), tokB.Raw())
	b.hello("sb-b", tokB.Gen())
	b.accepted()
	defer startBeating(b, 50*time.Millisecond)()

	var stdout bytes.Buffer
	type execDone struct {
		res ExecResult
		err error
	}
	done := make(chan execDone, 1)
	go func() {
		res, err := e.srv.Exec(context.Background(), "sb-b", ExecRequest{Argv: []string{"id"}, Stdout: &stdout})
		done <- execDone{res, err}
	}()
	req := b.mustNext(5 * time.Second).GetExecRequest()
	if req == nil {
		t.Fatal("B got no exec request")
	}

	// A, over its socket and with its token over TCP, tries to feed B's exec.
	for _, a := range []struct {
		name, target, bearer string
	}{{"socket", targetA, ""}, {"tcp", e.tcpTarget(), tokA.Raw()}} {
		rpc := dialRaw(t, a.target)
		out, err := rpc.ExecOutput(callContext(context.Background(), a.bearer, "sb-a"))
		if err != nil {
			t.Fatal(err)
		}
		_ = out.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Stdout{Stdout: []byte("forged")}})
		_ = out.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Exit{Exit: &sessionpb.ExecExit{Code: 0}}})
		if _, err := out.CloseAndRecv(); status.Code(err) != codes.NotFound {
			t.Fatalf("A over %s fed B's exec: %v", a.name, err)
		}
		// Claiming to be B over A's socket is refused outright.
		if a.bearer == "" {
			out, err := rpc.ExecOutput(callContext(context.Background(), "", "sb-b"))
			if err != nil {
				t.Fatal(err)
			}
			_ = out.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Stdout{Stdout: []byte("forged")}})
			if _, err := out.CloseAndRecv(); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("A claiming B on its socket: %v, want PermissionDenied", err)
			}
		}
	}

	// B's own output completes the exec, with nothing of A's in it.
	out, err := dialRaw(t, e.tcpTarget()).ExecOutput(callContext(context.Background(), tokB.Raw(), "sb-b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*sessionpb.ExecChunk{
		{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Stdout{Stdout: []byte("uid=0")}},
		{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Exit{Exit: &sessionpb.ExecExit{Code: 3}}},
	} {
		if err := out.Send(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d.err != nil || d.res.ExitCode != 3 || stdout.String() != "uid=0" {
		t.Fatalf("exec result %+v, %v, stdout %q", d.res, d.err, stdout.String())
	}
}

func TestExecIntoSandboxWithoutSessionFails(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.sandbox("sb-off")
	_, err := e.srv.Exec(context.Background(), "sb-off", ExecRequest{Argv: []string{"true"}})
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("err = %v, want ErrNotConnected", err)
	}
}

func TestBadHelloIsRejected(t *testing.T) {
	e := newEnv(t, envConfig{helloTimeout: 100 * time.Millisecond})
	target, tok := e.sandbox("sb-bad")
	hello := func(id string) *sessionpb.SupervisorMessage {
		return &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{SandboxId: id, TokenGen: tok.Gen()}}}
	}
	cases := []struct {
		name string
		send []*sessionpb.SupervisorMessage
	}{
		{"no hello", nil},
		{"hello for another sandbox on the socket", []*sessionpb.SupervisorMessage{hello("sb-other")}},
		{"heartbeat first", []*sessionpb.SupervisorMessage{{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}}},
		{"empty message", []*sessionpb.SupervisorMessage{{}}},
		{"empty sandbox id", []*sessionpb.SupervisorMessage{hello("")}},
		{"oversized sandbox id", []*sessionpb.SupervisorMessage{hello(strings.Repeat("x", maxHelloField+1))}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := openRaw(t, dialRaw(t, target), tok.Raw())
			for _, m := range tc.send {
				r.send(m)
			}
			r.expectRejected(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO)
		})
	}
	t.Run("second hello", func(t *testing.T) {
		r := openRaw(t, dialRaw(t, target), tok.Raw())
		r.hello("sb-bad", tok.Gen())
		r.accepted()
		r.hello("sb-bad", tok.Gen())
		r.expectRejected(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO)
		eventually(t, "unregistered", func() bool { return !e.srv.Connected("sb-bad") })
	})
	if got := e.rejections(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO); got != float64(len(cases)+1) {
		t.Fatalf("invalid_hello rejections = %v, want %d", got, len(cases)+1)
	}
}

func TestOversizedMessageIsRefused(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-big")
	r := openRaw(t, dialRaw(t, target), tok.Raw())
	r.send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: "sb-big", Version: strings.Repeat("v", MaxMessageSize+1)}}})
	_, err := r.next(5 * time.Second)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	if e.srv.Connected("sb-big") {
		t.Fatal("session registered from an oversized hello")
	}
}

func TestGarbageOnTheSocketDoesNotHurtTheGateway(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-junk")
	path := strings.TrimPrefix(target, "unix://")
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xff}, 4096),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), bytes.Repeat([]byte{0x00, 0x00, 0x40, 0x00, 0x01}, 100)...),
	} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(junk)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64<<10)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("gateway kept a connection that sent garbage %q...", junk[:8])
				}
				break
			}
		}
		_ = conn.Close()
	}
	r := openRaw(t, dialRaw(t, target), tok.Raw())
	r.hello("sb-junk", tok.Gen())
	r.accepted()
}

func TestReportExitReachesCallbackForItsOwnSandboxOnly(t *testing.T) {
	exits := make(chan ExitReport, 4)
	e := newEnv(t, envConfig{onExit: func(r ExitReport) { exits <- r }})
	target, tokA := e.sandbox("sb-a")
	e.sandbox("sb-b")
	src := e.newSource("sb-a", tokA)
	c, err := NewClient(ClientConfig{Target: target, SandboxID: "sb-a", InstanceID: "i-7", Source: src})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ReportExit(context.Background(), 137, 9); err != nil {
		t.Fatal(err)
	}
	got := <-exits
	if got != (ExitReport{SandboxID: "sb-a", InstanceID: "i-7", Code: 137, Signal: 9}) {
		t.Fatalf("exit report %+v", got)
	}
	// A's socket cannot report B's exit, nor can A's token over TCP.
	for _, target := range []string{target, e.tcpTarget()} {
		rpc := dialRaw(t, target)
		_, err := rpc.ReportExit(callContext(context.Background(), tokA.Raw(), "sb-a"),
			&sessionpb.ReportExitRequest{SandboxId: "sb-b", ExitCode: 1})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("report for B via %s: %v, want PermissionDenied", target, err)
		}
	}
	select {
	case r := <-exits:
		t.Fatalf("unexpected exit report %+v", r)
	default:
	}
}

func TestExecStreamCannotReadAnotherSandboxesInput(t *testing.T) {
	e := newEnv(t, envConfig{})
	targetA, tokA := e.sandbox("sb-a")
	_, tokB := e.sandbox("sb-b")
	b := openRaw(t, dialRaw(t, e.tcpTarget()), tokB.Raw())
	b.hello("sb-b", tokB.Gen())
	b.accepted()
	defer startBeating(b, 50*time.Millisecond)()

	input := make(chan ExecInput, 1)
	input <- ExecInput{Stdin: []byte("B's secret keystrokes")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := e.srv.Exec(ctx, "sb-b", ExecRequest{Argv: []string{"sh"}, Input: input, StreamStdin: true, TTY: true})
		done <- err
	}()
	req := b.mustNext(5 * time.Second).GetExecRequest()
	if req == nil || !req.GetStream() || !req.GetTty() {
		t.Fatalf("B got %v, want a streaming terminal exec request", req)
	}
	// A, over its socket and with its token over TCP, tries to take B's
	// exec: its input must never reach A.
	for _, a := range []struct {
		name, target, bearer string
	}{{"socket", targetA, ""}, {"tcp", e.tcpTarget(), tokA.Raw()}} {
		s, err := dialRaw(t, a.target).ExecStream(callContext(ctx, a.bearer, "sb-a"))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId()})
		if in, err := s.Recv(); status.Code(err) != codes.NotFound {
			t.Fatalf("A over %s took B's exec: got %v, %v; want NotFound", a.name, in, err)
		}
	}
	// B's own stream gets its input.
	s, err := dialRaw(t, e.tcpTarget()).ExecStream(callContext(ctx, tokB.Raw(), "sb-b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId()}); err != nil {
		t.Fatal(err)
	}
	if in, err := s.Recv(); err != nil || string(in.GetStdin()) != "B's secret keystrokes" {
		t.Fatalf("B's stream: %v, %v", in, err)
	}
	if err := s.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Exit{Exit: &sessionpb.ExecExit{Code: 0}}}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("B's exec: %v", err)
	}
}

func TestInteractiveExecAnsweredByAnOldSupervisorFailsSayingWhy(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, tok := e.sandbox("sb-old")
	old := openRaw(t, dialRaw(t, e.tcpTarget()), tok.Raw())
	old.hello("sb-old", tok.Gen())
	old.accepted()
	defer startBeating(old, 50*time.Millisecond)()
	done := make(chan error, 1)
	go func() {
		_, err := e.srv.Exec(context.Background(), "sb-old", ExecRequest{Argv: []string{"sh"}, TTY: true})
		done <- err
	}()
	req := old.mustNext(5 * time.Second).GetExecRequest()
	if req == nil {
		t.Fatal("no exec request")
	}
	// A supervisor that predates ExecStream ignores the stream flag.
	out, err := dialRaw(t, e.tcpTarget()).ExecOutput(callContext(context.Background(), tok.Raw(), "sb-old"))
	if err != nil {
		t.Fatal(err)
	}
	_ = out.Send(&sessionpb.ExecChunk{ExecId: req.GetExecId(), Data: &sessionpb.ExecChunk_Stdout{Stdout: []byte("$ ")}})
	if _, err := out.CloseAndRecv(); status.Code(err) != codes.NotFound {
		t.Fatalf("old supervisor's output: %v, want NotFound", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrExecUnsupported) {
			t.Fatalf("exec: %v, want ErrExecUnsupported", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("exec still waits for a supervisor that will never stream")
	}
}

func TestADeletedSandboxesSupervisorDoesNotWaitToReportItsExit(t *testing.T) {
	exits := make(chan ExitReport, 4)
	e := newEnv(t, envConfig{onExit: func(r ExitReport) { exits <- r }})
	target, tok := e.sandbox("sb-gone")
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-gone", Source: e.newSource("sb-gone", tok)})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-gone") })

	e.authority.Forget("sb-gone")
	e.srv.EndDeleted("sb-gone")
	eventually(t, "the client heard that the sandbox is deleted", func() bool {
		_, _, err := c.State()
		var rej *RejectedError
		return errors.As(err, &rej) && rej.Code == sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX
	})
	// A context that would let every retry run: the answer must not need it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ReportExit(ctx, 0, 15); !errors.Is(err, ErrUnknownSandbox) {
		t.Fatalf("ReportExit after deletion = %v, want ErrUnknownSandbox at once", err)
	}
	if ctx.Err() != nil {
		t.Fatal("ReportExit waited out its context")
	}
	select {
	case r := <-exits:
		t.Fatalf("an exit was reported for a deleted sandbox: %+v", r)
	default:
	}
}
