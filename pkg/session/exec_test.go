package session

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestExecRunsCommandsInTheSandbox(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-exec")
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-exec", Source: e.newSource("sb-exec", tok)})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-exec") })

	big := strings.Repeat("0123456789abcdef", 20000) // 320 KB: many chunks
	cases := []struct {
		name       string
		req        ExecRequest
		want       ExecResult
		wantStdout string
		wantStderr string
		errorHas   string
	}{
		{name: "stdout and exit code", req: ExecRequest{Argv: []string{"sh", "-c", "echo hello; echo oops >&2; exit 3"}},
			want: ExecResult{ExitCode: 3}, wantStdout: "hello\n", wantStderr: "oops\n"},
		{name: "stdin", req: ExecRequest{Argv: []string{"cat"}, Stdin: []byte("from the gateway")},
			want: ExecResult{}, wantStdout: "from the gateway"},
		{name: "no stdin reads nothing", req: ExecRequest{Argv: []string{"cat"}}, want: ExecResult{}},
		{name: "env", req: ExecRequest{Argv: []string{"sh", "-c", "printf %s \"$GREETING\""}, Env: []string{"GREETING=hi"}},
			want: ExecResult{}, wantStdout: "hi"},
		{name: "large output", req: ExecRequest{Argv: []string{"cat"}, Stdin: []byte(big)}, want: ExecResult{}, wantStdout: big},
		{name: "killed by a signal", req: ExecRequest{Argv: []string{"sh", "-c", "kill -TERM $$"}},
			want: ExecResult{ExitCode: 128 + int(syscall.SIGTERM), Signal: int(syscall.SIGTERM)}},
		{name: "missing binary", req: ExecRequest{Argv: []string{"/nonexistent/binary"}},
			want: ExecResult{ExitCode: ExitNotFound}, errorHas: "no such file"},
		{name: "missing binary on PATH", req: ExecRequest{Argv: []string{"sandkey-no-such-command"}},
			want: ExecResult{ExitCode: ExitNotFound}, errorHas: "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			tc.req.Stdout, tc.req.Stderr = &stdout, &stderr
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := e.srv.Exec(ctx, "sb-exec", tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(res.Error, tc.errorHas) || (tc.errorHas == "") != (res.Error == "") {
				t.Fatalf("error %q, want one containing %q", res.Error, tc.errorHas)
			}
			res.Error = ""
			if res != tc.want {
				t.Fatalf("result %+v, want %+v", res, tc.want)
			}
			if stdout.String() != tc.wantStdout || stderr.String() != tc.wantStderr {
				t.Fatalf("stdout %q stderr %q, want %q %q", trunc(stdout.String()), stderr.String(), trunc(tc.wantStdout), tc.wantStderr)
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestExecCancelKillsTheCommand(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-kill")
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-kill", Source: e.newSource("sb-kill", tok)})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-kill") })

	var stdout syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.srv.Exec(ctx, "sb-kill", ExecRequest{Argv: []string{"sh", "-c", "echo started; exec sleep 60"}, Stdout: &stdout})
		done <- err
	}()
	eventually(t, "command started", func() bool { return strings.Contains(stdout.String(), "started") })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("exec err = %v, want context.Canceled", err)
	}
	// The supervisor killed the sleep: stopping the client (which waits
	// for its execs) does not take 60 s.
	start := time.Now()
	c.stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("client stop took %s: the cancelled command kept running", d)
	}
}

func TestExecFailsWhenTheSessionEnds(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-drop")
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-drop", Source: e.newSource("sb-drop", tok)})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-drop") })
	var stdout syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := e.srv.Exec(context.Background(), "sb-drop", ExecRequest{Argv: []string{"sh", "-c", "echo started; exec sleep 60"}, Stdout: &stdout})
		done <- err
	}()
	eventually(t, "command started", func() bool { return strings.Contains(stdout.String(), "started") })
	e.srv.Disconnect("sb-drop")
	select {
	case err := <-done:
		if !errors.Is(err, ErrSessionEnded) {
			t.Fatalf("exec err = %v, want ErrSessionEnded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec still waiting after its session ended")
	}
}

func TestExecRefusesOversizedStdin(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, err := e.srv.Exec(context.Background(), "sb-any", ExecRequest{Argv: []string{"cat"}, Stdin: make([]byte, MaxExecStdin+1)})
	if err == nil || !strings.Contains(err.Error(), "stdin") {
		t.Fatalf("err = %v, want a stdin size error", err)
	}
}

// syncBuffer is a bytes.Buffer safe to read while Exec writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
