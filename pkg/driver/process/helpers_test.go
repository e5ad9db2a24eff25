package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
	"github.com/sandkey/sandkey/pkg/guest"
)

// waitTimeout bounds every wait of these tests for a process to report
// or end; they take milliseconds when nothing is wrong.
const waitTimeout = 10 * time.Second

// noExitSleep, as GORACE, stops a race-enabled stand-in from sleeping a
// second at exit, which would slow every Stop down.
const noExitSleep = "atexit_sleep_ms=0"

var sandboxSeq atomic.Int64

// newTestDriver opens a Driver on stateRoot (a new one when empty), with
// this test binary as the supervisor, and closes it when t ends.
func newTestDriver(t *testing.T, stateRoot string) *Driver {
	t.Helper()
	if stateRoot == "" {
		stateRoot = t.TempDir()
	}
	d, err := New(Config{SupervisorPath: testBinary(t), StateRoot: stateRoot, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// newTestSpec returns the spec of a new sandbox whose supervisor is the
// stand-in in the given mode, and the path of the stand-in's report. Its
// directories live in a temporary directory of t. Whatever the test does,
// the sandbox's processes are ended when t ends.
func newTestSpec(t *testing.T, mode ...string) (driver.Spec, string) {
	t.Helper()
	dir := t.TempDir()
	id := fmt.Sprintf("sbx-%d", sandboxSeq.Add(1))
	report := filepath.Join(dir, "report.json")
	spec := driver.Spec{
		SandboxID:  id,
		Name:       "test " + id,
		InstanceID: id + "-i1",
		Command:    mode,
		Env:        map[string]string{roleEnv: "supervisor", reportEnv: report, "GORACE": noExitSleep},
		SandboxEnv: map[string]string{
			guest.EnvAuthMode:   "dir",
			guest.EnvSandboxID:  id,
			guest.EnvInstanceID: id + "-i1",
		},
		TokenDir:  filepath.Join(dir, "auth"),
		SocketDir: filepath.Join(dir, "gw"),
		StateDir:  filepath.Join(dir, "state"),
	}
	for _, d := range []string{spec.TokenDir, spec.SocketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	endOnCleanup(t, spec.StateDir)
	return spec, report
}

// endOnCleanup kills, when t ends, the session of the supervisor recorded
// in stateDir if it still runs, and reaps it if it is this process's child.
// A passing test has stopped it already.
func endOnCleanup(t *testing.T, stateDir string) {
	t.Cleanup(func() {
		rec, err := readPIDRecord(stateDir)
		if err != nil {
			return
		}
		p := rec.process()
		state, ppid := p.Observe()
		if state == hostproc.Gone {
			return
		}
		if state == hostproc.Alive {
			t.Logf("cleanup: killing the session of pid %d", p.PID)
			if err := p.KillSession(killWait); err != nil {
				t.Error(err)
			}
		}
		if ppid == os.Getpid() {
			var ws unix.WaitStatus
			unix.Wait4(p.PID, &ws, 0, nil) // ECHILD if the driver's reaper was first
		}
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startSandbox creates and starts spec and waits for the stand-in's report.
func startSandbox(t *testing.T, d *Driver, spec driver.Spec, report string) standInReport {
	t.Helper()
	if err := d.Create(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	return readReport(t, report)
}

// readReport waits for the stand-in's report at path and returns it; once
// it exists the stand-in has set up its signal handling.
func readReport(t *testing.T, path string) standInReport {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var r standInReport
		err := statedir.ReadJSON(path, &r)
		if err == nil {
			return r
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			t.Fatalf("stand-in report: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(t *testing.T, d *Driver, id string) driver.Status {
	t.Helper()
	st, err := d.Status(ctxT(t), id)
	if err != nil {
		t.Fatalf("Status %s: %v", id, err)
	}
	return st
}

// waitStopped polls Status until the sandbox is stopped.
func waitStopped(t *testing.T, d *Driver, id string) driver.Status {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		st := status(t, d, id)
		if st.State == driver.StateStopped {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s still %+v after %s", id, st, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processEnded reports whether pid, started at startTicks, no longer runs.
func processEnded(pid int, startTicks uint64) bool {
	state, _ := hostproc.Process{PID: pid, StartTicks: startTicks}.Observe()
	return state != hostproc.Alive
}

func startTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	st, err := hostproc.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.StartTicks
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o, want %#o", path, got, want)
	}
}
