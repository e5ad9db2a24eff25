package k8se2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/gatewaycmd"
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
	c, closer, err := admin.Dial(context.Background(), filepath.Join(e.state, gatewaycmd.AdminSocketName), admin.DialOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { closer.Close() })
	return kubeenv.AdminExec(c, ref)
}
