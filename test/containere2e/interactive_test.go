package containere2e

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

func TestInteractiveExecOnATerminalAndLogsInAContainer(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, time.Hour)
		sb := h.create("shell", "sh", "-c", "echo from-the-workload; sleep 600")

		// A shell on a terminal the supervisor allocates in the container.
		input := make(chan session.ExecInput)
		out := &lockedBuffer{}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		type ended struct {
			res session.ExecResult
			err error
		}
		done := make(chan ended, 1)
		go func() {
			res, err := h.gw.Exec(ctx, sb.ID, session.ExecRequest{Argv: []string{"sh"}, Input: input, StreamStdin: true, TTY: true,
				Window: session.WindowSize{Rows: 24, Cols: 80}, Stdout: out, Stderr: out})
			done <- ended{res, err}
		}()
		send := func(keys string) {
			t.Helper()
			select {
			case input <- session.ExecInput{Stdin: []byte(keys)}:
			case r := <-done:
				t.Fatalf("exec ended early: %+v, %v; output %q", r.res, r.err, out.String())
			}
		}
		await := func(want string) {
			t.Helper()
			h.eventually(20*time.Second, want+" on the terminal", func() bool { return strings.Contains(out.String(), want) })
		}
		send("test -t 0 && test -t 1 && echo on-a-$((6*7))-tty\n")
		await("on-a-42-tty")
		send("exit 4\n")
		select {
		case r := <-done:
			if r.err != nil || r.res.ExitCode != 4 {
				t.Fatalf("exec -it sh: %+v, %v; want exit 4; output %q", r.res, r.err, out.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("shell did not exit; output %q", out.String())
		}

		// The engine's log of the container holds the workload's output.
		logs, err := h.gw.Logs(ctx, sb.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		defer logs.Close()
		text, err := io.ReadAll(logs)
		if err != nil || !strings.Contains(string(text), "from-the-workload") {
			t.Fatalf("logs of the container: %q, %v; want the workload's output", text, err)
		}
	})
}
