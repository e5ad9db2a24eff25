// Package binaries builds the real gateway and supervisor binaries for the
// tests that run them, the way `make build` builds them (static, stripped),
// so those tests exercise what ships.
package binaries

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/testmain"
	"golang.org/x/sys/unix"
)

// Paths of the binaries RunTests built.
var Gateway, Supervisor string

// RunTests builds both binaries into a temporary directory, runs the
// package's tests, removes the directory, checks for leaked goroutines and
// exits: call it as a package's TestMain. Each of after runs once the
// tests have ended (a shared cluster's Stop); its error fails the run.
func RunTests(m *testing.M, after ...func() error) {
	dir, err := os.MkdirTemp("", "sk-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	Gateway, Supervisor = filepath.Join(dir, "gateway"), filepath.Join(dir, "supervisor")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/",
		"github.com/sandkey/sandkey/cmd/gateway", "github.com/sandkey/sandkey/cmd/supervisor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	testmain.Run(m, func() error {
		var errs []error
		for _, f := range after {
			errs = append(errs, f())
		}
		os.RemoveAll(dir)
		return errors.Join(errs...)
	})
}

// TokenDir is a sandbox's token directory under the gateway's default
// token root, <state>/tokens/<id>.
func TokenDir(stateDir, id string) string { return filepath.Join(stateDir, "tokens", id) }

// Socket is a sandbox's attested socket under the gateway's default socket
// root, <state>/sockets/<id>/gw.sock.
func Socket(stateDir, id string) string { return filepath.Join(stateDir, "sockets", id, "gw.sock") }

// UnmountUnder unmounts every mount at or below dir, deepest first: the
// tmpfs a gateway running as root mounts at its token and socket roots outlives it on
// purpose, so a test that ran one unmounts it before removing its files.
func UnmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// TempDir makes a new directory with a short path (sandbox sockets live
// below a state directory, and a unix socket's path is short) and removes
// it when the test ends, after unmounting what a gateway running as root
// mounted below it (the tmpfs at its token root outlives the gateway on
// purpose). Cleanups run last in, first out: those a test registers after
// TempDir, such as stopping its gateway, run before the removal.
func TempDir(t testing.TB, prefix string) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatalf("make a test directory: %v", err)
	}
	t.Cleanup(func() {
		if err := UnmountUnder(dir); err != nil {
			t.Errorf("unmount below the test directory: %v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the test directory: %v", err)
		}
	})
	return dir
}

// MemoryRoots makes the token and socket roots of the state directory
// stateDir as `gateway serve` does: tmpfs mounts of their own where the
// test may mount (root, as under CI), so that container engines and VMs
// are tested on the layout they see in production. It fails the test
// when root could not mount them. Unmount them with UnmountUnder.
func MemoryRoots(t testing.TB, stateDir string) {
	t.Helper()
	tokens, err := memroot.PrepareTokens(stateDir, "", "16m")
	if err != nil {
		t.Fatal(err)
	}
	sockets, err := memroot.PrepareSockets(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && (!tokens.MemoryBacked || !sockets.MemoryBacked) {
		t.Fatalf("as root, the token root (%s) and socket root (%s) should be tmpfs mounts", tokens.FSType, sockets.FSType)
	}
}
