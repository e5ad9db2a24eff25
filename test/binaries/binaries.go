// Package binaries builds the real gateway and supervisor binaries for the
// tests that run them, the way `make build` builds them (static, stripped),
// so those tests exercise what ships.
package binaries

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// Paths of the binaries RunTests built.
var Gateway, Supervisor string

// RunTests builds both binaries into a temporary directory, runs the
// package's tests, removes the directory, checks for leaked goroutines and
// exits: call it as a package's TestMain.
func RunTests(m *testing.M) {
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
		os.RemoveAll(dir)
		return nil
	})
}
