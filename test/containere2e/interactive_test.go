package containere2e

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/exectest"
)

func TestInteractiveExecOnATerminalAndLogsInAContainer(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, time.Hour)
		sb := h.create("shell", "sh", "-c", "echo from-the-workload; sleep 600")

		// A shell on a terminal the supervisor allocates in the container.
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		term := exectest.Start(ctx, func(ctx context.Context, req session.ExecRequest) (session.ExecResult, error) {
			return h.gw.Exec(ctx, sb.ID, req)
		}, "sh")
		if err := term.Type("test -t 0 && test -t 1 && echo on-a-$((6*7))-tty\n"); err != nil {
			t.Fatal(err)
		}
		h.eventually(20*time.Second, "on-a-42-tty on the terminal", func() bool { return strings.Contains(term.Output(), "on-a-42-tty") })
		if err := term.Type("exit 4\n"); err != nil {
			t.Fatal(err)
		}
		if res, err := term.Wait(20 * time.Second); err != nil || res.ExitCode != 4 {
			t.Fatalf("exec -it sh: %+v, %v; want exit 4; output %q", res, err, term.Output())
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
