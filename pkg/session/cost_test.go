package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// goroutinesRunning counts the goroutines whose stack holds fn.
func goroutinesRunning(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// Once accepted, an idle session keeps only its Connect handler (gRPC's
// goroutine, reading the stream): no pump, and one heartbeat ticker for
// all sessions. A push wakes a pump, which is gone again once the token is
// acknowledged.
func TestIdleSessionsKeepNoGoroutineOfTheirOwn(t *testing.T) {
	e := newEnv(t, envConfig{heartbeat: time.Hour})
	const n = 5
	raws := make([]*rawSession, n)
	for i := range raws {
		id := fmt.Sprintf("sb-idle-%d", i)
		target, tok := e.sandbox(id)
		raws[i] = openRaw(t, dialRaw(t, target), tok.Raw())
		raws[i].hello(id, tok.Gen())
		raws[i].accepted()
	}
	idle := func() bool {
		return goroutinesRunning("session.(*sessionLoop).run(") == n &&
			goroutinesRunning("session.(*sessionLoop).pump(") == 0 &&
			goroutinesRunning("session.(*Server).heartbeats(") == 1
	}
	eventually(t, "5 handlers reading, no pump, one ticker", idle)

	gen := e.mint("sb-idle-0")
	e.srv.Push("sb-idle-0")
	u, err := raws[0].tokenUpdate(5 * time.Second)
	if err != nil || u.GetGen() != gen.Gen() {
		t.Fatalf("push: %v %v, want gen %d", u, err, gen.Gen())
	}
	raws[0].ack(gen.Gen())
	eventually(t, "the acknowledgement recorded", func() bool { return metricValue(e.srv.metrics.acks) == 1 })
	eventually(t, "idle again after the push", idle)
}

// The session service needs the stream contexts that ServerOptions' tap
// makes cancellable; on a server built without it every Connect fails
// with an error saying so, rather than sessions that cannot be ended.
func TestConnectOnAServerWithoutServerOptionsSaysSo(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, tok := e.sandbox("sb-bare")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	e.srv.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })

	r := openRaw(t, dialRaw(t, "tcp://"+l.Addr().String()), tok.Raw())
	// The handler fails before it reads anything, so the Hello may find the
	// stream already ended: gRPC's Send then returns io.EOF, and the
	// stream's status comes from the receiving side.
	hello := &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: "sb-bare", InstanceId: "raw", TokenGen: tok.Gen(), Version: "test"}}}
	if err := r.trySend(hello); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send hello: %v", err)
	}
	_, err = r.next(5 * time.Second)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "session.ServerOptions") {
		t.Fatalf("Connect on a bare gRPC server: %v, want Internal naming session.ServerOptions", err)
	}
}

// Stopping the gRPC server closes every sandbox socket, as gRPC's Stop
// closes every listener it serves, although the sockets share one Serve.
func TestStoppingTheServerClosesEverySandboxSocket(t *testing.T) {
	base, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	g := grpc.NewServer(ServerOptions(nil)...)
	sessionpb.RegisterSupervisorSessionServer(g, attestationEcho{})
	ls := NewListeners(g, nil)
	defer ls.Close()
	var paths []string
	for _, id := range []string{"sb-1", "sb-2"} {
		p, err := ls.AddSandbox(filepath.Join(base, id), id)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	rpc := dialRaw(t, "unix://"+paths[0])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := rpc.ReportExit(ctx, &sessionpb.ReportExitRequest{}, grpc.WaitForReady(true)); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("call over a sandbox socket: %v, want the echo's AlreadyExists", err)
	}

	g.Stop()
	for _, p := range paths {
		eventually(t, "socket "+p+" closed", func() bool {
			c, err := net.Dial("unix", p)
			if err == nil {
				_ = c.Close()
			}
			return err != nil
		})
	}
}
