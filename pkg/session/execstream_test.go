package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// interactiveExec is an exec running in the background, its input fed by
// the test.
type interactiveExec struct {
	input  chan ExecInput
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan struct{}
	res    ExecResult
	err    error
}

func startInteractive(t *testing.T, srv *Server, sandboxID string, req ExecRequest) *interactiveExec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	x := &interactiveExec{input: make(chan ExecInput), out: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	req.Input, req.Stdout, req.Stderr = x.input, x.out, x.out
	go func() {
		defer close(x.done)
		x.res, x.err = srv.Exec(ctx, sandboxID, req)
	}()
	t.Cleanup(func() {
		cancel()
		<-x.done
	})
	return x
}

func (x *interactiveExec) send(t *testing.T, in ExecInput) {
	t.Helper()
	select {
	case x.input <- in:
	case <-x.done:
		t.Fatalf("exec ended (%+v, %v) before taking input; output %q", x.res, x.err, x.out.String())
	}
}

func (x *interactiveExec) awaitOutput(t *testing.T, want string) {
	t.Helper()
	eventually(t, fmt.Sprintf("output %q (have %q)", want, x.out), func() bool { return strings.Contains(x.out.String(), want) })
}

func (x *interactiveExec) wait(t *testing.T) (ExecResult, error) {
	t.Helper()
	select {
	case <-x.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("exec did not end; output %q", x.out.String())
	}
	return x.res, x.err
}

func connectedSandbox(t *testing.T, id string) *env {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox(id)
	e.startClient(ClientConfig{Target: target, SandboxID: id, Source: e.newSource(id, tok)})
	eventually(t, "session", func() bool { return e.srv.Connected(id) })
	return e
}

func TestInteractiveExecStreamsStdinAsItIsTyped(t *testing.T) {
	e := connectedSandbox(t, "sb-stdin")
	x := startInteractive(t, e.srv, "sb-stdin", ExecRequest{Argv: []string{"cat"}, StreamStdin: true})
	// cat answers each line before stdin ends: the input is not buffered up front.
	x.send(t, ExecInput{Stdin: []byte("first line\n")})
	x.awaitOutput(t, "first line\n")
	x.send(t, ExecInput{Stdin: []byte("second\n")})
	x.awaitOutput(t, "second\n")
	close(x.input)
	res, err := x.wait(t)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v, %v", res, err)
	}
}

func TestInteractiveExecRunsOnATerminalThatFollowsResizes(t *testing.T) {
	e := connectedSandbox(t, "sb-tty")
	x := startInteractive(t, e.srv, "sb-tty", ExecRequest{Argv: []string{"sh"}, Env: []string{"PS1=$ "}, StreamStdin: true, TTY: true,
		Window: WindowSize{Rows: 30, Cols: 100}})
	x.send(t, ExecInput{Stdin: []byte("tty; stty size; echo $((6*7))\n")})
	x.awaitOutput(t, "/dev/pts/")
	x.awaitOutput(t, "30 100")
	x.awaitOutput(t, "42")
	x.send(t, ExecInput{Resize: &WindowSize{Rows: 40, Cols: 120}})
	x.send(t, ExecInput{Stdin: []byte("stty size\n")})
	x.awaitOutput(t, "40 120")
	// ^C reaches the foreground job through the terminal, not the shell.
	x.send(t, ExecInput{Stdin: []byte("sleep 100\n")})
	time.Sleep(200 * time.Millisecond)
	x.send(t, ExecInput{Stdin: []byte{3}})
	x.send(t, ExecInput{Stdin: []byte("echo after-$((1+1))\n")})
	x.awaitOutput(t, "after-2")
	x.send(t, ExecInput{Stdin: []byte("exit 7\n")})
	res, err := x.wait(t)
	if err != nil || res.ExitCode != 7 {
		t.Fatalf("exec: %+v, %v; output %q", res, err, x.out.String())
	}
}

func TestInteractiveExecCallerGoingAwayKillsTheProcessGroup(t *testing.T) {
	e := connectedSandbox(t, "sb-gone")
	x := startInteractive(t, e.srv, "sb-gone", ExecRequest{Argv: []string{"sh", "-c", "sleep 300 & echo pid=$!; wait"}, StreamStdin: true})
	x.awaitOutput(t, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(x.out.String(), "pid=")))
	if err != nil {
		t.Fatalf("output %q: %v", x.out.String(), err)
	}
	x.cancel()
	if _, err := x.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("exec error %v, want context.Canceled", err)
	}
	eventually(t, fmt.Sprintf("background child %d killed", pid), func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	})
}

func TestInteractiveExecEndsWithAClearErrorWhenTheSessionDrops(t *testing.T) {
	e := connectedSandbox(t, "sb-drop")
	x := startInteractive(t, e.srv, "sb-drop", ExecRequest{Argv: []string{"sh", "-c", "echo ready; sleep 300"}, StreamStdin: true})
	x.awaitOutput(t, "ready")
	e.srv.Disconnect("sb-drop")
	_, err := x.wait(t)
	if !errors.Is(err, ErrSessionEnded) || !strings.Contains(err.Error(), "supervisor disconnected") {
		t.Fatalf("exec error %v, want ErrSessionEnded saying the supervisor disconnected", err)
	}
}

// A stream of 100 MB into a command that does not read for its first
// seconds: were stdin carried on the session, the supervisor would block
// writing it and acknowledge no token meanwhile. Each push must be
// acknowledged within two heartbeat intervals while the stream is held
// back and while it flows.
func TestLargeStdinStreamDoesNotDelayTokenPushes(t *testing.T) {
	const (
		total  = 100 << 20
		piece  = 256 << 10
		ackDue = 2 * 200 * time.Millisecond // two of the test env's heartbeats
	)
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-big")
	src := e.newSource("sb-big", tok)
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-big", Source: src})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-big") })

	x := startInteractive(t, e.srv, "sb-big", ExecRequest{Argv: []string{"sh", "-c", "sleep 2; wc -c"}, StreamStdin: true})
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		defer close(x.input)
		buf := bytes.Repeat([]byte("x"), piece)
		for sent := 0; sent < total; sent += piece {
			select {
			case x.input <- ExecInput{Stdin: buf}:
			case <-x.done:
				return
			}
		}
	}()

	pushes, slowest := 0, time.Duration(0)
	for {
		select {
		case <-feedDone:
		default:
			gen := e.mint("sb-big").Gen()
			e.srv.Push("sb-big")
			start := time.Now()
			for e.authority.Delivered("sb-big") < gen {
				if waited := time.Since(start); waited > ackDue {
					t.Fatalf("push of generation %d not acknowledged after %s while stdin streams", gen, waited)
				}
				time.Sleep(time.Millisecond)
			}
			pushes++
			slowest = max(slowest, time.Since(start))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		break
	}
	res, err := x.wait(t)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v, %v", res, err)
	}
	if got := strings.TrimSpace(x.out.String()); got != strconv.Itoa(total) {
		t.Fatalf("command read %s bytes, want %d", got, total)
	}
	if pushes < 10 {
		t.Fatalf("only %d pushes while the stream ran; the test proves nothing", pushes)
	}
	t.Logf("%d pushes acknowledged while 100 MB streamed, the slowest in %s", pushes, slowest)
}
