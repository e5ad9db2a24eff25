package gatewaycmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver/vm"
)

func TestVMKrunRunIsHiddenAndSaysWhyAVMCannotRun(t *testing.T) {
	dir := t.TempDir()
	if _, out, _ := runCLI(t, "--help"); strings.Contains(out, vmKrunRunUse) {
		t.Errorf("gateway --help lists the internal %s:\n%s", vmKrunRunUse, out)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"cpus":0}`), 0o600)
	noLib := filepath.Join(dir, "vm.json")
	os.WriteFile(noLib, []byte(`{"library":"/nonexistent/libkrun.so.1","cpus":1,"memory_mib":256,"root":"/r","exec":"/init","env":[]}`), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no description", []string{vmKrunRunUse}, ExitUsage, "want one argument"},
		{"unusable description", []string{vmKrunRunUse, bad}, ExitUsage, "cpus 0"},
		{"libkrun missing", []string{vmKrunRunUse, noLib}, ExitFailure, "libkrun"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestVMDriverIsRegisteredWithItsFlags(t *testing.T) {
	var o driverOptions
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addDriverFlags(fs, &o)
	image := t.TempDir()
	if err := fs.Parse([]string{"--drivers", "vm", "--vm-backend", "krun", "--vm-image", image, "--vm-memory", "256"}); err != nil {
		t.Fatal(err)
	}
	env := driverEnv{stateDir: t.TempDir(), log: zap.NewNop()}
	ds, err := buildDrivers(env, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDrivers(ds)
	if d, ok := ds[vm.Name]; !ok || d.Name() != vm.Name {
		t.Fatalf("drivers = %v, want the vm driver", ds)
	}
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o = driverOptions{}
	addDriverFlags(fs, &o)
	fs.Parse([]string{"--drivers", "vm", "--vm-backend", "firecracker"})
	if _, err := buildDrivers(env, &o); err == nil || !strings.Contains(err.Error(), `backend "firecracker"`) {
		t.Errorf("buildDrivers with an unknown backend = %v", err)
	}
}
