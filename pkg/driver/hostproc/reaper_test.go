package hostproc

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startChild starts sh -c script as a child of this process and drops
// Go's handle on it, as the drivers do, so that only a Reaper collects it.
func startChild(t *testing.T, script string) Process {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	p, err := Identify(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		WaitNoHang(pid, &ws)
	})
	return p
}

func TestReaperCollectsAnExitAndHandsOverItsStatus(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	type exit struct {
		ws  unix.WaitStatus
		err error
	}
	got := make(chan exit, 1)
	p := startChild(t, "exec sleep 60")
	done := r.Add(p, func(ws unix.WaitStatus, err error) { got <- exit{ws, err} })

	if running, ok := r.Running(p); !ok || !running {
		t.Fatalf("Running = %v, %v; want a registered child that runs", running, ok)
	}
	if err := unix.Kill(p.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reaper did not collect a killed child within 10 s")
	}
	e := <-got
	if e.err != nil || !e.ws.Signaled() || e.ws.Signal() != unix.SIGKILL {
		t.Errorf("onExit got %v, %v; want killed by SIGKILL", e.ws, e.err)
	}
	if _, ok := r.Running(p); ok {
		t.Error("a reaped child is still registered")
	}
	if r.Done(p) != nil {
		t.Error("Done of a reaped child is not nil")
	}
}

func TestReaperRunningReapsAChildThatEndedBeforeItsSignal(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	p := startChild(t, "exit 7")
	var code int
	r.Add(p, func(ws unix.WaitStatus, err error) { code = ExitCode(ws) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		running, ok := r.Running(p)
		if !ok || !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a child that exits at once still runs after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// onExit ran under the reaper's lock, before Running returned.
	if code != 7 {
		t.Errorf("exit code = %d, want 7", code)
	}
}

func TestReaperIgnoresUnregisteredProcesses(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	p := startChild(t, "exec sleep 60")
	if running, ok := r.Running(p); ok || running {
		t.Errorf("Running of an unregistered process = %v, %v; want not registered", running, ok)
	}
	if r.Done(p) != nil {
		t.Error("Done of an unregistered process is not nil")
	}
}

func TestReaperWaitEndedWaitsForTheReaperOrPollsWithABound(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	p := startChild(t, "exec sleep 60")
	r.Add(p, nil)
	running := func() bool { run, _ := r.Running(p); return run }

	ended, err := r.WaitEnded(context.Background(), p, 50*time.Millisecond, time.Millisecond, running)
	if err != nil || ended {
		t.Fatalf("WaitEnded of a running child = %v, %v; want false at the timeout", ended, err)
	}
	unix.Kill(p.PID, unix.SIGKILL)
	if ended, err := r.WaitEnded(context.Background(), p, 10*time.Second, time.Millisecond, running); err != nil || !ended {
		t.Fatalf("WaitEnded of a killed child = %v, %v; want true", ended, err)
	}

	// Not a registered child: polled until running says it ended.
	polls := 0
	ended, err = r.WaitEnded(context.Background(), Process{PID: 1 << 30}, 10*time.Second, time.Millisecond, func() bool {
		polls++
		return polls < 3
	})
	if err != nil || !ended || polls != 3 {
		t.Errorf("WaitEnded by polling = %v, %v after %d polls; want true after 3", ended, err, polls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.WaitEnded(ctx, Process{PID: 1 << 30}, 10*time.Second, time.Hour, func() bool { return true }); err == nil {
		t.Error("WaitEnded with an ended context returned no error")
	}
}
