package k8se2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
	"github.com/sandkey/sandkey/test/binaries"
)

const (
	// stockImageRef is an image with no sandkey in it: Debian's static
	// busybox alone, as a stock busybox image is.
	stockImageRef = "sandkey.local/k8se2e-busybox:1"
	// supervisorImageRef holds /supervisor alone, as images/build.sh's
	// supervisor-only image (FROM scratch).
	supervisorImageRef = "sandkey.local/k8se2e-supervisor:1"
)

// Issue 16 on Kubernetes: with --kubernetes-supervisor-image any image is
// a sandbox. An init container from the supervisor image copies the
// supervisor into an emptyDir, the stock image's container runs it over
// the sandbox's command; the sandbox registers through the exchange and
// exec works. A sandbox without a command is refused at create, naming
// the flag.
func TestAnyImageRunsWithTheSupervisorCopiedIn(t *testing.T) {
	c := cluster.Cluster(t)
	stock, sup := t.TempDir(), t.TempDir()
	copyInto(t, "/bin/busybox", filepath.Join(stock, "bin", "busybox"))
	copyInto(t, binaries.Supervisor, filepath.Join(sup, "supervisor"))
	c.ImportImage(t, stockImageRef, stock, []string{"/bin/busybox", "sh"})
	c.ImportImage(t, supervisorImageRef, sup, []string{"/supervisor", "--"})

	e := newEnvWith(t, "--kubernetes-supervisor-image", supervisorImageRef)
	_, err := e.cli("sandbox", "create", "nocommand", "--driver", "kubernetes", "--image", stockImageRef)
	if err == nil || !strings.Contains(err.Error(), "--kubernetes-supervisor-image") || !strings.Contains(err.Error(), "command") {
		t.Errorf("create without a command: %v; want a refusal naming --kubernetes-supervisor-image and the command", err)
	}

	e.mustCLI("sandbox", "create", "stock", "--driver", "kubernetes", "--image", stockImageRef, "--start", "--",
		"/bin/busybox", "sh", "-c", "echo stock-workload-up; exec /bin/busybox sleep 3600")
	e.awaitConnected("stock")
	if out := e.mustCLI("sandbox", "exec", "stock", "--", "/bin/busybox", "echo", "hello from a stock image"); strings.TrimSpace(out) != "hello from a stock image" {
		t.Errorf("exec output %q", out)
	}
	// The supervisor is the mounted copy, which the sandbox cannot change.
	if out, err := e.cli("sandbox", "exec", "stock", "--", "/bin/busybox", "sh", "-c",
		"/bin/busybox readlink /proc/1/exe; /bin/busybox touch /run/sandkey/bin/x 2>/dev/null && echo writable; exit 0"); err != nil ||
		!strings.Contains(out, "/run/sandkey/bin/supervisor") || strings.Contains(out, "writable") {
		t.Errorf("PID 1 and its directory: %q, %v; want /run/sandkey/bin/supervisor, read-only", out, err)
	}
	pod := e.pod("stock")
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != kubernetes.InstallContainerName ||
		pod.Spec.InitContainers[0].Image != supervisorImageRef {
		t.Errorf("init containers %+v, want %s from %s", pod.Spec.InitContainers, kubernetes.InstallContainerName, supervisorImageRef)
	}
	if out := e.mustCLI("sandbox", "logs", "stock"); !strings.Contains(out, "stock-workload-up") {
		t.Errorf("sandbox logs: %q, want the workload's output", out)
	}
}

// copyInto copies the executable src to dst, making dst's directory.
func copyInto(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("image file %s: %v (busybox comes from Debian's busybox-static)", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
