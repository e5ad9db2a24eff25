package krun

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// runnerEnv makes the test binary a libkrun runner, as `gateway
// vm-krun-run` is: it runs the VM described in the file it names.
const runnerEnv = "KRUN_TEST_RUN_VM"

func TestMain(m *testing.M) {
	if spec := os.Getenv(runnerEnv); spec != "" {
		vm, err := ReadVM(spec)
		if err == nil {
			err = Run(vm)
		}
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(3)
	}
	goleak.VerifyTestMain(m)
}

func TestReadVMRoundTripsTheDriversDescription(t *testing.T) {
	dir := t.TempDir()
	vm := VM{CPUs: 1, MemoryMiB: 256, Root: "/r", Exec: "/init", Args: []string{"--", "sh"}, Env: []string{"A=1"},
		Shares: []Share{{Tag: "t", Path: "/auth", ReadOnly: true}}, VsockPorts: []VsockPort{{Port: 1024, Path: "/gw.sock"}}}
	data, _ := json.Marshal(vm)
	path := filepath.Join(dir, "vm.json")
	os.WriteFile(path, data, 0o600)
	got, err := ReadVM(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, vm) {
		t.Errorf("ReadVM = %+v, want %+v", got, vm)
	}
	if got.library() != DefaultLibrary {
		t.Errorf("library() = %q, want the default %q", got.library(), DefaultLibrary)
	}
}

func TestCheckRefusesUnusableVMsNamingTheField(t *testing.T) {
	ok := VM{CPUs: 1, MemoryMiB: 256, Root: "/r", Exec: "/init", Env: []string{}}
	if err := ok.Check(); err != nil {
		t.Fatalf("Check of a usable VM: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*VM)
		want string
	}{
		{"no cpus", func(v *VM) { v.CPUs = 0 }, "cpus 0"},
		{"relative root", func(v *VM) { v.Root = "rootfs" }, `root "rootfs"`},
		{"no exec", func(v *VM) { v.Exec = "" }, "no program"},
		{"share without tag", func(v *VM) { v.Shares = []Share{{Path: "/a"}} }, `share "" of "/a"`},
		{"vsock without port", func(v *VM) { v.VsockPorts = []VsockPort{{Path: "/s"}} }, "vsock port 0"},
		{"NUL in an argument", func(v *VM) { v.Args = []string{"a\x00b"} }, "NUL"},
		{"bad environment entry", func(v *VM) { v.Env = []string{"NOEQUALS"} }, `"NOEQUALS"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := ok
			tc.edit(&vm)
			if err := vm.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want an error containing %q", err, tc.want)
			}
			if err := Run(vm); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want the Check error before loading anything", err)
			}
		})
	}
}
