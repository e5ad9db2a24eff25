package workload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func startRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

func waitExit(t *testing.T, r *Runner) Exit {
	t.Helper()
	select {
	case <-r.Done():
		return r.Wait()
	case <-time.After(20 * time.Second):
		t.Fatal("workload did not exit within 20s")
		return Exit{}
	}
}

func TestWaitReturnsWorkloadExitCode(t *testing.T) {
	exe, env := helperArgv("exit")
	tests := []struct {
		name string
		argv []string
		want Exit
	}{
		{"exit 0", append(exe, "0"), Exit{Code: 0}},
		{"exit 1", append(exe, "1"), Exit{Code: 1}},
		{"exit 42", append(exe, "42"), Exit{Code: 42}},
		{"killed by SIGKILL", []string{"/bin/sh", "-c", "kill -KILL $$"}, Exit{Code: 137, Signal: syscall.SIGKILL}},
		{"killed by SIGTERM", []string{"/bin/sh", "-c", "kill -TERM $$"}, Exit{Code: 143, Signal: syscall.SIGTERM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRunner(t, Config{Argv: tt.argv, Env: env})
			if got := waitExit(t, r); got != tt.want {
				t.Errorf("exit = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStartFailsForMissingCommand(t *testing.T) {
	_, err := Start(context.Background(), Config{Argv: []string{"/nonexistent/sandkey-workload"}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/sandkey-workload") {
		t.Fatalf("Start error = %v, want one naming the command", err)
	}
	if _, err := Start(context.Background(), Config{}); err == nil {
		t.Fatal("Start with no argv succeeded")
	}
	// The failed starts released the process's reaper slot.
	r, err := NewReaper(ReaperConfig{})
	if err != nil {
		t.Fatalf("NewReaper after failed Start: %v", err)
	}
	r.Close()
}

func TestForwardsEverySignalToWorkload(t *testing.T) {
	argv, env := helperArgv("signals")
	out := newLines()
	r := startRunner(t, Config{Argv: argv, Env: env, Stdout: out, Grace: time.Minute})
	if line := out.next(t); line != "ready" {
		t.Fatalf("first line = %q, want ready", line)
	}
	for _, sig := range forwarded {
		// Delivered to the supervisor (this process), as from a container
		// engine; the Runner must pass it on.
		if err := syscall.Kill(os.Getpid(), sig.(syscall.Signal)); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("got %d", sig.(syscall.Signal))
		if line := out.next(t); line != want {
			t.Fatalf("after %v: line = %q, want %q", sig, line, want)
		}
	}
	if got := waitExit(t, r); got != (Exit{}) {
		t.Fatalf("exit = %v, want 0", got)
	}
}

func TestSignalReachesWorkloadProcessGroup(t *testing.T) {
	// The shell's child (this binary, awaiting USR1) gets the signal only
	// if it goes to the whole group, not just to the shell, whose trap
	// exits 7.
	out := newLines()
	r := startRunner(t, Config{
		Argv:   []string{"/bin/sh", "-c", `trap 'exit 7' USR1; "$0" 10 & echo $!; wait; exit 1`, os.Args[0]},
		Env:    append(os.Environ(), helperEnv+"=await"),
		Stdout: out,
	})
	// The grandchild's pid and its "ready" (it runs: a signal between
	// fork and exec would be taken by the shell's copy of the trap).
	gpid := 0
	for range 2 {
		line := out.next(t)
		if pid, err := strconv.Atoi(line); err == nil {
			gpid = pid
		} else if line != "ready" {
			t.Fatalf("unexpected line %q", line)
		}
	}
	if err := r.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, r); got != (Exit{Code: 7}) {
		t.Fatalf("exit = %v, want 7 (trap ran)", got)
	}
	// The exit is published once the grandchild's output (it shares the
	// pipe) is in, or after OutputDrain.
	if got, want := out.Lines(), fmt.Sprintf("got %d", syscall.SIGUSR1); len(got) != 3 || got[2] != want {
		syscall.Kill(gpid, syscall.SIGKILL)
		t.Fatalf("output %q, want the grandchild's %q last", got, want)
	}
	waitGone(t, gpid)
}

func TestTermIgnoredIsKilledAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	tests := []struct {
		name string
		stop func(r *Runner, cancel context.CancelFunc)
	}{
		{"Stop", func(r *Runner, _ context.CancelFunc) { go r.Stop() }},
		{"SIGTERM to supervisor", func(*Runner, context.CancelFunc) { syscall.Kill(os.Getpid(), syscall.SIGTERM) }},
		{"context cancelled", func(_ *Runner, cancel context.CancelFunc) { cancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, env := helperArgv("ignore-term")
			out := newLines()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := Start(ctx, Config{Argv: argv, Env: env, Stdout: out, Grace: grace, Logger: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if line := out.next(t); line != "ready" {
				t.Fatalf("line = %q, want ready", line)
			}
			start := time.Now()
			tt.stop(r, cancel)
			got := waitExit(t, r)
			if want := (Exit{Code: 137, Signal: syscall.SIGKILL}); got != want {
				t.Fatalf("exit = %v, want %v", got, want)
			}
			if elapsed := time.Since(start); elapsed < grace {
				t.Fatalf("killed after %v, before the grace period %v", elapsed, grace)
			}
		})
	}
}

func TestStopEndsWorkloadThatHonoursTerm(t *testing.T) {
	argv, env := helperArgv("sleep", "1h")
	r := startRunner(t, Config{Argv: argv, Env: env, Grace: time.Minute})
	done := make(chan struct{})
	go func() { r.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return well before the grace period")
	}
	if got := r.Wait(); got != (Exit{Code: 143, Signal: syscall.SIGTERM}) {
		t.Fatalf("exit = %v, want killed by SIGTERM", got)
	}
}

func TestSignalAfterExitReturnsProcessDone(t *testing.T) {
	argv, env := helperArgv("exit", "0")
	r := startRunner(t, Config{Argv: argv, Env: env})
	waitExit(t, r)
	if err := r.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit = %v, want os.ErrProcessDone", err)
	}
}

func TestCloseStopsRunningWorkload(t *testing.T) {
	argv, env := helperArgv("sleep", "1h")
	r, err := Start(context.Background(), Config{Argv: argv, Env: env, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pid := r.Pid()
	r.Close()
	if got := r.Wait(); got.Signal != syscall.SIGTERM {
		t.Fatalf("exit = %v, want killed by SIGTERM", got)
	}
	waitGone(t, pid)
}

func TestOrphanedGrandchildIsReapedAndWorkloadStatusKept(t *testing.T) {
	argv, env := helperArgv("orphan", "3", "0s", "300ms")
	out := newLines()
	r := startRunner(t, Config{Argv: argv, Env: env, Stdout: out})
	gpid, err := strconv.Atoi(out.next(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, r); got != (Exit{Code: 3}) {
		t.Fatalf("workload exit = %v, want 3", got)
	}
	// The grandchild was reparented to us, the subreaper, not to init...
	if st := procStatus(gpid); !strings.Contains(st, fmt.Sprintf("PPid:\t%d", os.Getpid())) {
		t.Fatalf("grandchild %d: %s, want PPid %d (subreaper)", gpid, st, os.Getpid())
	}
	// ...and once it exits, nobody but our reaper can take it off the table.
	waitGone(t, gpid)
	if n := r.Reaper().OrphansReaped(); n < 1 {
		t.Fatalf("OrphansReaped = %d, want >= 1", n)
	}
}

func TestRunsAsConfiguredUserWithGroupsInDirWithEnv(t *testing.T) {
	uid, gid := uint32(65534), uint32(65533)
	if os.Geteuid() != 0 {
		t.Skip("changing user needs root")
	}
	out := newLines()
	r := startRunner(t, Config{
		Argv: []string{"/bin/sh", "-c", `pwd; echo "FOO=$FOO"
while read -r k a rest; do case $k in Uid:|Gid:) echo "$k $a";; Groups:) echo "$k $a $rest";; esac; done </proc/self/status`},
		Env:    []string{"FOO=bar"},
		Dir:    "/",
		UID:    &uid,
		GID:    &gid,
		Groups: []uint32{gid, 29},
		Stdout: out,
	})
	if got := waitExit(t, r); got != (Exit{}) {
		t.Fatalf("exit = %v", got)
	}
	want := []string{"/", "FOO=bar", "Uid: 65534", "Gid: 65533", "Groups: 29 65533"}
	if got := out.Lines(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("output = %q, want %q", got, want)
	}
}

func TestStdinReaderIsCopiedToWorkload(t *testing.T) {
	out := newLines()
	r := startRunner(t, Config{
		Argv:   []string{"/bin/sh", "-c", `read -r x; echo "got $x"; echo oops >&2`},
		Stdin:  strings.NewReader("hello\n"),
		Stdout: out,
		Stderr: out,
	})
	if got := waitExit(t, r); got != (Exit{}) {
		t.Fatalf("exit = %v", got)
	}
	// Output is complete once the exit is published.
	if got := strings.Join(out.Lines(), "|"); got != "got hello|oops" {
		t.Fatalf("output = %q", got)
	}
}
