//go:build cgo

package krun

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/vmfs/krun/kruntest"
)

// sandboxVM is a VM as the vm driver describes one.
func sandboxVM(lib, dir string) VM {
	return VM{
		Library:       lib,
		CPUs:          2,
		MemoryMiB:     512,
		Root:          filepath.Join(dir, "rootfs"),
		Shares:        []Share{{Tag: "sandkey-auth", Path: filepath.Join(dir, "auth"), ReadOnly: true}},
		VsockPorts:    []VsockPort{{Port: 1024, Path: filepath.Join(dir, "gw", "gw.sock")}},
		ConsoleOutput: filepath.Join(dir, "console.log"),
		Exec:          "/init",
		Args:          []string{"--", "sleep", "600"},
		Env:           []string{"SANDKEY_GATEWAY=vsock://2:1024", "SANDKEY_SANDBOX_ID=sbx-1", "SANDKEY_VM_TAG=sandkey-auth"},
	}
}

func wantCalls(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("libkrun calls:\n got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestRunMakesTheLibkrunCallsInOrderAndLetsStartEnterTakeOver(t *testing.T) {
	dir := t.TempDir()
	vm := sandboxVM(kruntest.Build(t, true), dir)
	spec := filepath.Join(dir, "vm.json")
	data, _ := json.Marshal(vm)
	if err := os.WriteFile(spec, data, 0o600); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "calls.log")

	// krun_start_enter ends its process, so Run runs in a child: this
	// test binary, as the runner (see TestMain).
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runnerEnv+"="+spec, kruntest.LogEnv+"="+log)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != kruntest.StartEnterExit {
		t.Fatalf("runner ended with %v, want exit status 42 from the stand-in's krun_start_enter; output:\n%s", err, out)
	}

	env := `["SANDKEY_GATEWAY=vsock://2:1024","SANDKEY_SANDBOX_ID=sbx-1","SANDKEY_VM_TAG=sandkey-auth"]`
	wantCalls(t, kruntest.Calls(t, log), []string{
		"krun_create_ctx() = 7",
		"krun_set_vm_config(7, 2, 512)",
		fmt.Sprintf(`krun_set_root(7, "%s/rootfs")`, dir),
		fmt.Sprintf(`krun_add_virtiofs3(7, "sandkey-auth", "%s/auth", 0, true)`, dir),
		"krun_disable_implicit_vsock(7)",
		"krun_add_vsock(7, 0)",
		fmt.Sprintf(`krun_add_vsock_port(7, 1024, "%s/gw/gw.sock")`, dir),
		fmt.Sprintf(`krun_set_console_output(7, "%s/console.log")`, dir),
		`krun_set_exec(7, "/init", ["--","sleep","600"], ` + env + `)`,
		`krun_set_env(7, ` + env + `)`,
		"krun_start_enter(7)",
	})
}

func TestRunWithoutArgumentsOrEnvironmentPassesEmptyArraysNotNull(t *testing.T) {
	dir := t.TempDir()
	vm := sandboxVM(kruntest.Build(t, true), dir)
	vm.Args, vm.Env, vm.Shares, vm.VsockPorts, vm.ConsoleOutput = nil, []string{}, nil, nil, ""
	spec := filepath.Join(dir, "vm.json")
	data, _ := json.Marshal(vm)
	os.WriteFile(spec, data, 0o600)
	log := filepath.Join(dir, "calls.log")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runnerEnv+"="+spec, kruntest.LogEnv+"="+log)
	if out, err := cmd.CombinedOutput(); !strings.Contains(fmt.Sprint(err), "42") {
		t.Fatalf("runner: %v\n%s", err, out)
	}
	// NULL would make libkrun copy the runner's (the gateway's) environment.
	calls := kruntest.Calls(t, log)
	wantCalls(t, calls[max(len(calls)-3, 0):], []string{`krun_set_exec(7, "/init", [], [])`, `krun_set_env(7, [])`, "krun_start_enter(7)"})
}

// TestRunGivesTheGuestNoHostNetwork pins that the guest's only way out is
// its vsock port to the sandbox's socket. Left alone, libkrun adds a vsock
// device that hijacks the guest's AF_INET sockets (TSI) and opens them in
// the runner, on the host: the guest would reach the host's loopback (the
// gateway's HTTP and shared listeners) and every network the host
// reaches, where a container has network "none" and QEMU a restricted
// user network. Run turns that device off and adds one without TSI, before
// any vsock port, even for a VM that has no port at all.
func TestRunGivesTheGuestNoHostNetwork(t *testing.T) {
	for _, ports := range [][]VsockPort{nil, {{Port: 1024, Path: "/run/gw.sock"}}} {
		dir := t.TempDir()
		log := filepath.Join(dir, "calls.log")
		t.Setenv(kruntest.LogEnv, log)
		vm := sandboxVM(kruntest.Build(t, true), dir)
		vm.VsockPorts = ports
		runToStartEnter(t, vm, log)
		calls := kruntest.Calls(t, log)
		disable, add, port := slices.Index(calls, "krun_disable_implicit_vsock(7)"), slices.Index(calls, "krun_add_vsock(7, 0)"), -1
		for i, c := range calls {
			if strings.HasPrefix(c, "krun_add_vsock_port(") {
				port = i
				break
			}
		}
		if disable < 0 || add < disable || (ports != nil && port < add) || (ports == nil && port >= 0) {
			t.Errorf("with vsock ports %v, libkrun calls:\n  %s\nwant krun_disable_implicit_vsock(7), then krun_add_vsock(7, 0) (no TSI), then the ports",
				ports, strings.Join(calls, "\n  "))
		}
	}
}

// runToStartEnter runs vm in a child (this test binary as the runner, see
// TestMain), since krun_start_enter ends its process, and fails unless the
// child got as far as the stand-in's krun_start_enter.
func runToStartEnter(t *testing.T, vm VM, log string) {
	t.Helper()
	spec := filepath.Join(filepath.Dir(log), "vm.json")
	data, err := json.Marshal(vm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runnerEnv+"="+spec, kruntest.LogEnv+"="+log)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != kruntest.StartEnterExit {
		t.Fatalf("runner ended with %v, want exit status %d from the stand-in's krun_start_enter; output:\n%s", err, kruntest.StartEnterExit, out)
	}
}

func TestRunRefusesALibkrunThatCannotTurnOffTSIBeforeAnyCall(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.log")
	t.Setenv(kruntest.LogEnv, log)
	lib := kruntest.BuildWithoutVsockConfig(t)
	err := Run(sandboxVM(lib, dir))
	if err == nil || !strings.Contains(err.Error(), lib+": it has no krun_disable_implicit_vsock") || !strings.Contains(err.Error(), "host's network") {
		t.Fatalf("Run = %v, want an error naming the missing krun_disable_implicit_vsock and saying what it would cost", err)
	}
	if calls := kruntest.Calls(t, log); len(calls) != 0 {
		t.Errorf("calls made with a libkrun that would give the guest the host's network: %q", calls)
	}
}

func TestRunReportsAFailingCallAndFreesTheContext(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.log")
	t.Setenv(kruntest.LogEnv, log)
	vm := sandboxVM(kruntest.Build(t, true), dir)
	vm.Root = kruntest.FailRoot
	err := Run(vm)
	if err == nil || !strings.Contains(err.Error(), `krun_set_root(7, "/standin/fail"): no such file or directory`) {
		t.Fatalf("Run = %v, want the failing krun_set_root named with its errno", err)
	}
	wantCalls(t, kruntest.Calls(t, log), []string{
		"krun_create_ctx() = 7",
		"krun_set_vm_config(7, 2, 512)",
		`krun_set_root(7, "/standin/fail")`,
		"krun_free_ctx(7)",
	})
}

func TestRunRefusesALibkrunWithoutReadOnlySharesBeforeAnyCall(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.log")
	t.Setenv(kruntest.LogEnv, log)
	lib := kruntest.Build(t, false)
	err := Run(sandboxVM(lib, dir))
	if err == nil || !strings.Contains(err.Error(), lib+": it has no krun_add_virtiofs3") {
		t.Fatalf("Run = %v, want an error naming the missing krun_add_virtiofs3", err)
	}
	if calls := kruntest.Calls(t, log); len(calls) != 0 {
		t.Errorf("calls made before the library was found incomplete: %q", calls)
	}
}

func TestRunWithoutLibkrunSaysHowToGetIt(t *testing.T) {
	for _, lib := range []string{"libkrun-not-installed.so.1", "/nonexistent/libkrun.so"} {
		err := Run(sandboxVM(lib, t.TempDir()))
		if err == nil || !strings.Contains(err.Error(), "load libkrun "+lib) || !strings.Contains(err.Error(), "install libkrun") {
			t.Errorf("Run with %s = %v, want a load error naming it and saying what to install", lib, err)
		}
	}
}
