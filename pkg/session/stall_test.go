package session

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// A supervisor that keeps its transport alive and heartbeats but never
// reads can fill the stream's flow-control window (here with large exec
// requests). The gateway must still end the session, and leave no
// goroutine blocked behind it (goleak checks at the end of the package).
func TestSessionOfASupervisorThatStopsReadingEnds(t *testing.T) {
	e := newEnv(t, envConfig{heartbeat: 100 * time.Millisecond})
	target, tok := e.sandbox("sb-deaf")
	rpc := dialRaw(t, target)
	ctx, cancel := context.WithCancel(callContext(context.Background(), tok.Raw(), "sb-deaf"))
	defer cancel()
	stream, err := rpc.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: "sb-deaf", InstanceId: "i", TokenGen: tok.Gen()}}}); err != nil {
		t.Fatal(err)
	}
	stopBeats := make(chan struct{})
	beatsDone := make(chan struct{})
	go func() { // heartbeats, and never a Recv
		defer close(beatsDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopBeats:
				return
			case <-tick.C:
				if stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}) != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stopBeats); <-beatsDone }()
	eventually(t, "session registered", func() bool { return e.srv.Connected("sb-deaf") })

	// Exec requests of 500 KB each, which the supervisor never reads.
	execCtx, execCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer execCancel()
	execDone := make(chan struct{}, 8)
	for range 8 {
		go func() {
			e.srv.Exec(execCtx, "sb-deaf", ExecRequest{Argv: []string{"cat"}, Stdin: bytes.Repeat([]byte("x"), MaxExecStdin-1024)})
			execDone <- struct{}{}
		}()
	}
	eventually(t, "the deaf supervisor's session ended", func() bool { return !e.srv.Connected("sb-deaf") })
	for range 8 {
		select {
		case <-execDone:
		case <-time.After(15 * time.Second):
			t.Fatal("an exec to the ended session never returned")
		}
	}
}
