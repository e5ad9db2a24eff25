package vme2e

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/session"
)

// lockedBuffer collects an exec's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The guest's init mounts devpts, so the supervisor can give an exec a
// terminal; the driver's log of a VM is its console.
func TestVMInteractiveExecOnATerminalAndConsoleLogs(t *testing.T) {
	e, sb := shared(t)
	input := make(chan session.ExecInput)
	out := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type ended struct {
		res session.ExecResult
		err error
	}
	done := make(chan ended, 1)
	go func() {
		res, err := e.gw.Exec(ctx, sb.ID, session.ExecRequest{Argv: []string{"sh"}, Input: input, StreamStdin: true, TTY: true,
			Window: session.WindowSize{Rows: 24, Cols: 80}, Stdout: out, Stderr: out})
		done <- ended{res, err}
	}()
	select {
	case input <- session.ExecInput{Stdin: []byte("test -t 0 && test -t 1 && echo guest-$((6*7))-tty\n")}:
	case r := <-done:
		t.Fatalf("exec ended early: %+v, %v; output %q", r.res, r.err, out.String())
	}
	eventually(t, 30*time.Second, "the guest shell answers on its terminal", func() bool { return strings.Contains(out.String(), "guest-42-tty") })
	input <- session.ExecInput{Stdin: []byte("exit 6\n")}
	select {
	case r := <-done:
		if r.err != nil || r.res.ExitCode != 6 {
			t.Fatalf("exec -it sh in the guest: %+v, %v; want exit 6; output %q", r.res, r.err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("guest shell did not exit; output %q", out.String())
	}

	logs, err := e.gw.Logs(ctx, sb.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	text, err := io.ReadAll(logs)
	if err != nil || !strings.Contains(string(text), "session accepted") {
		t.Fatalf("logs of the VM (%d bytes), %v; want its console with the supervisor's session lines", len(text), err)
	}
}
