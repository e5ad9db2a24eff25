// Package kruntest builds a STAND-IN for libkrun, for tests: a shared
// library with libkrun's entry points and C signatures that runs no VM and
// records every call, with its arguments, one line per call, in the file
// named by $KRUN_STANDIN_LOG (see testdata/standin_libkrun.c). Its krun_start_enter
// exits the process with StartEnterExit, as libkrun exits with the
// workload's status. libkrun itself cannot run on the test machines.
package kruntest

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed testdata/standin_libkrun.c
var source []byte

// LogEnv names the file the stand-in appends its calls to.
const LogEnv = "KRUN_STANDIN_LOG"

// StartEnterExit is the exit status of a process whose krun_start_enter
// the stand-in ran.
const StartEnterExit = 42

// FailRoot is the root for which the stand-in's krun_set_root fails with
// -ENOENT.
const FailRoot = "/standin/fail"

// Build compiles the stand-in with gcc into a directory of t and returns
// its path. With withVirtiofs3 it has every entry point Run calls; without
// (false) it lacks krun_add_virtiofs3 and the vsock configuration
// (krun_disable_implicit_vsock, krun_add_vsock), as an old libkrun does.
func Build(t testing.TB, withVirtiofs3 bool) string {
	t.Helper()
	if withVirtiofs3 {
		return build(t, "-DWITH_VIRTIOFS3", "-DWITH_VSOCK_CONFIG")
	}
	return build(t)
}

// BuildWithoutVsockConfig compiles a stand-in that has krun_add_virtiofs3
// but neither krun_disable_implicit_vsock nor krun_add_vsock: a libkrun
// that cannot keep its guests off the host's network.
func BuildWithoutVsockConfig(t testing.TB) string {
	t.Helper()
	return build(t, "-DWITH_VIRTIOFS3")
}

func build(t testing.TB, defines ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc is needed to build the libkrun stand-in (and cgo needs it too): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "standin_libkrun.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libkrun-standin.so")
	args := append([]string{"-shared", "-fPIC", "-Wall", "-Werror", "-o", lib, src}, defines...)
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("build the libkrun stand-in: %v\n%s", err, out)
	}
	return lib
}

// Calls returns the calls recorded in log, one per element; none when the
// file does not exist.
func Calls(t testing.TB, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}
