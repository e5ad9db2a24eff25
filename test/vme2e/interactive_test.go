package vme2e

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/exectest"
)

// The guest's init mounts devpts, so the supervisor can give an exec a
// terminal; the driver's log of a VM is its console.
func TestVMInteractiveExecOnATerminalAndConsoleLogs(t *testing.T) {
	e, sb := shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	term := exectest.Start(ctx, func(ctx context.Context, req session.ExecRequest) (session.ExecResult, error) {
		return e.gw.Exec(ctx, sb.ID, req)
	}, "sh")
	if err := term.Type("test -t 0 && test -t 1 && echo guest-$((6*7))-tty\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the guest shell answers on its terminal", func() bool { return strings.Contains(term.Output(), "guest-42-tty") })
	if err := term.Type("exit 6\n"); err != nil {
		t.Fatal(err)
	}
	if res, err := term.Wait(30 * time.Second); err != nil || res.ExitCode != 6 {
		t.Fatalf("exec -it sh in the guest: %+v, %v; want exit 6; output %q", res, err, term.Output())
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
