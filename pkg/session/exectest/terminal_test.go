package exectest

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo stands in for a sandbox's shell: it shows what is typed and
// exits with code 5 at "exit".
func echo(ctx context.Context, req session.ExecRequest) (session.ExecResult, error) {
	if !req.TTY || !req.StreamStdin || req.Input == nil {
		return session.ExecResult{ExitCode: 1}, nil
	}
	for {
		select {
		case in := <-req.Input:
			if strings.HasPrefix(string(in.Stdin), "exit") {
				return session.ExecResult{ExitCode: 5}, nil
			}
			req.Stdout.Write(in.Stdin)
		case <-ctx.Done():
			return session.ExecResult{}, ctx.Err()
		}
	}
}

func TestTerminalShowsWhatIsTypedAndHowTheExecEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	term := Start(ctx, echo, "sh")
	if err := term.Type("hello\n"); err != nil {
		t.Fatal(err)
	}
	if err := term.Type("exit\n"); err != nil {
		t.Fatal(err)
	}
	res, err := term.Wait(10 * time.Second)
	if err != nil || res.ExitCode != 5 {
		t.Fatalf("Wait = %+v, %v; want exit 5", res, err)
	}
	if term.Output() != "hello\n" {
		t.Errorf("output %q, want what was typed", term.Output())
	}
	if err := term.Type("more"); err == nil {
		t.Error("typing into an ended exec succeeded")
	}
}

func TestTerminalWaitIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	term := Start(ctx, echo, "sh")
	if _, err := term.Wait(20 * time.Millisecond); err == nil {
		t.Error("Wait returned without the exec ending")
	}
	cancel()
	if _, err := term.Wait(10 * time.Second); err == nil {
		t.Error("the exec ended by its context returned no error")
	}
}
