// Package vme2e runs sandkey end to end with microVM sandboxes: the real
// gateway core on a real SQLite store, the vm driver's QEMU backend, and
// real guests (Debian's cloud kernel, the supervisor as init, busybox as
// the workload) booted under TCG, as on the test machines KVM does not
// work. Each guest reaches the gateway only through its restricted user
// network's one forward, and sees its token directory only through
// virtiofsd.
//
// TestMain builds the static supervisor and a guest image with
// images/vm/build.sh (its kernel packages are cached outside the tree).
// It needs root, QEMU, virtiofsd, socat and busybox-static, which
// scripts/vm-deps.sh installs: without them the tests skip, except under
// CI=true, where they fail.
//
// To stay within minutes on two cores, one VM serves the token tests in
// turn (each leaves it running and registered); the conformance suite boots
// its own, and the rotation benchmarks share one (bootForBench).
// VME2E_DEBUG=1 logs the shared guest's console once it has booted.
package vme2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
	"github.com/sandkey/sandkey/pkg/vmfs"
)

var (
	// imageDir is the guest image TestMain built.
	imageDir string
	// unusable says why the machine cannot run the tests, when it cannot.
	unusable string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sk-vme2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if unusable = missingRequirements(); unusable == "" {
		imageDir = filepath.Join(dir, "image")
		if err := buildImage(dir, imageDir); err != nil {
			fmt.Fprintf(os.Stderr, "vme2e: build the guest image: %v\n", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	testmain.Run(m, func() error {
		err := errors.Join(closeShared(), closeBenchVM())
		os.RemoveAll(dir)
		return err
	})
}

// missingRequirements says what the machine lacks to boot test guests.
func missingRequirements() string {
	if runtime.GOARCH != "amd64" {
		return "the guest image is x86-64"
	}
	if os.Geteuid() != 0 {
		return "needs root (virtiofsd)"
	}
	for _, p := range []string{"qemu-system-x86_64", vmfs.DefaultVirtiofsd, "socat", "/bin/busybox", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Sprintf("%s is missing (run scripts/vm-deps.sh)", p)
		}
	}
	return ""
}

// requireVM skips a test on a machine that cannot run guests, except under
// CI, where it fails: there, scripts/vm-deps.sh has installed everything.
func requireVM(t testing.TB) {
	t.Helper()
	if unusable == "" {
		return
	}
	testmain.SkipIfMissing(t, fmt.Errorf("cannot run VM tests: %s", unusable), true)
}

// buildImage builds the static supervisor and a guest image holding it.
func buildImage(work, out string) error {
	supervisor := filepath.Join(work, "supervisor")
	build := exec.Command("go", "build", "-trimpath", "-o", supervisor, "github.com/sandkey/sandkey/cmd/supervisor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build supervisor: %v\n%s", err, b)
	}
	script, err := filepath.Abs("../../images/vm/build.sh")
	if err != nil {
		return err
	}
	cmd := exec.Command(script, out)
	cmd.Env = append(os.Environ(), "SUPERVISOR="+supervisor)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", script, err, b)
	}
	return nil
}
