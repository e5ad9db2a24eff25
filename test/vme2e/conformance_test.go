package vme2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/drivertest"
	"github.com/sandkey/sandkey/pkg/driver/vm"
	"github.com/sandkey/sandkey/pkg/guest"
)

var conformanceSeq atomic.Int64

// TestVMDriverConformance runs the driver suite against real QEMU guests.
// No gateway listens: the guests' supervisors run their workload without a
// session, and their exit reports fail before they power off.
func TestVMDriverConformance(t *testing.T) {
	requireVM(t)
	drivertest.Run(t,
		func(t *testing.T) driver.Driver {
			d, err := vm.New(vm.Config{StateRoot: tempDir(t), Image: imageDir, Accel: vm.AccelTCG, DeleteGrace: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			return d
		},
		func(t *testing.T) driver.Spec {
			dir := tempDir(t)
			id := fmt.Sprintf("conformance-%d", conformanceSeq.Add(1))
			spec := driver.Spec{
				SandboxID: id, Name: id, InstanceID: id + "-i1", Command: []string{"sleep", "100000"},
				SandboxEnv: map[string]string{guest.EnvAuthMode: "dir", guest.EnvSandboxID: id, guest.EnvInstanceID: id + "-i1"},
				TokenDir:   filepath.Join(dir, "auth"), SocketDir: filepath.Join(dir, "gw"), StateDir: filepath.Join(dir, "state"),
			}
			for _, d := range []string{spec.TokenDir, spec.SocketDir} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			return spec
		})
}

// tempDir is a short temporary directory (t.TempDir's names are too long
// for the sockets under it), removed when t ends.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
