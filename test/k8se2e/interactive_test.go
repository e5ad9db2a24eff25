package k8se2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/gatewaycmd"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/exectest"
	"github.com/sandkey/sandkey/test/binaries"
	"github.com/sandkey/sandkey/test/kubeenv"
)

// Issue 17 on Kubernetes: `sandbox logs` prints the workload's output
// from the pod log API, and with -f keeps printing what comes; and a
// terminal exec (-it) runs in the pod, as the supervisor allocates it.
func TestLogsOfAPodAndATerminalInIt(t *testing.T) {
	e := newEnv(t)
	// The workload says hello, then a line each time /mark appears.
	e.mustCLI("sandbox", "create", "chatty", "--driver", "kubernetes", "--image", imageRef, "--start", "--",
		"/busybox", "sh", "-c", "echo from-the-workload; while true; do if [ -e /mark ]; then /busybox rm /mark; echo marked; fi; /busybox sleep 0.2; done")
	e.awaitConnected("chatty")

	if out := e.mustCLI("sandbox", "logs", "chatty"); !strings.Contains(out, "from-the-workload") {
		t.Errorf("sandbox logs: %q, want the workload's output", out)
	}

	var followed exectest.Buffer
	follow := exec.Command(binaries.Gateway, "--state-dir", e.state, "sandbox", "logs", "-f", "chatty")
	follow.Stdout, follow.Stderr = &followed, &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- follow.Wait() }()
	defer func() {
		follow.Process.Signal(syscall.SIGINT)
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			follow.Process.Kill()
			<-ended
		}
	}()
	e.eventually("logs -f shows the workload's first line", kubeenv.Bound, func() bool { return strings.Contains(followed.String(), "from-the-workload") })
	e.mustCLI("sandbox", "exec", "chatty", "--", "/busybox", "touch", "/mark")
	e.eventually("logs -f shows the line written after it started", kubeenv.Bound, func() bool { return strings.Contains(followed.String(), "marked") })
	select {
	case err := <-ended:
		t.Fatalf("logs -f ended while the pod runs: %v; output %q", err, followed.String())
	default:
	}

	ctx, cancel := context.WithTimeout(context.Background(), kubeenv.Bound)
	defer cancel()
	term := exectest.Start(ctx, e.adminExec("chatty"), "/busybox", "sh")
	if err := term.Type("test -t 0 && test -t 1 && echo on-a-$((6*7))-tty\n"); err != nil {
		t.Fatal(err)
	}
	e.eventually("on-a-42-tty on the terminal", kubeenv.Bound, func() bool { return strings.Contains(term.Output(), "on-a-42-tty") })
	if err := term.Type("exit 4\n"); err != nil {
		t.Fatal(err)
	}
	if res, err := term.Wait(kubeenv.Bound); err != nil || res.ExitCode != 4 {
		t.Fatalf("exec -it sh: %+v, %v; want exit 4; output %q", res, err, term.Output())
	}
}

// adminExec is an exectest.ExecFunc on the gateway's operator API, as
// `sandbox exec -i -t` calls it, for the sandbox ref.
func (e *env) adminExec(ref string) exectest.ExecFunc {
	return func(ctx context.Context, req session.ExecRequest) (session.ExecResult, error) {
		c, closer, err := admin.Dial(ctx, filepath.Join(e.state, gatewaycmd.AdminSocketName), admin.DialOptions{})
		if err != nil {
			return session.ExecResult{}, err
		}
		defer closer.Close()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.Exec(ctx)
		if err != nil {
			return session.ExecResult{}, err
		}
		start := &adminpb.ExecStart{Request: &adminpb.ExecSandboxRequest{Sandbox: ref, Argv: req.Argv, Env: req.Env},
			Stdin: req.StreamStdin, Tty: req.TTY,
			Window: &adminpb.WindowSize{Rows: uint32(req.Window.Rows), Cols: uint32(req.Window.Cols)}}
		if err := stream.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Start{Start: start}}); err != nil {
			return session.ExecResult{}, err
		}
		var sender sync.WaitGroup
		sender.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case in := <-req.Input:
					if stream.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Stdin{Stdin: in.Stdin}}) != nil {
						return
					}
				}
			}
		})
		defer func() { cancel(); sender.Wait() }()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return session.ExecResult{}, fmt.Errorf("exec stream ended without an exit: %w", err)
			}
			switch {
			case msg.GetStdout() != nil:
				req.Stdout.Write(msg.GetStdout())
			case msg.GetStderr() != nil:
				req.Stderr.Write(msg.GetStderr())
			case msg.GetExit() != nil:
				x := msg.GetExit()
				return session.ExecResult{ExitCode: int(x.GetCode()), Signal: int(x.GetSignal()), Error: x.GetError()}, nil
			}
		}
	}
}
