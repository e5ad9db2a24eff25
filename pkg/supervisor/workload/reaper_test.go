package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func newReaper(t *testing.T, cfg ReaperConfig) *Reaper {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	r, err := NewReaper(cfg)
	if err != nil {
		t.Fatalf("NewReaper: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

func receive(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("exit channel closed without a value")
		}
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s")
		return Exit{}
	}
}

func TestEveryQuickChildGetsItsOwnStatus(t *testing.T) {
	// Children that exit at once race the registration of their pid; none
	// may lose its status to the reaper.
	r := newReaper(t, ReaperConfig{})
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code := i % 7
			ch, err := r.Start(exec.Command("/bin/sh", "-c", "exit "+strconv.Itoa(code)))
			if err != nil {
				errs <- err
				return
			}
			select {
			case e := <-ch:
				if e.Code != code {
					errs <- fmt.Errorf("child %d: exit %v, want %d", i, e, code)
				}
			case <-time.After(20 * time.Second):
				errs <- fmt.Errorf("child %d: no exit", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExecChildrenBesideWorkloadGetTheirOwnStatus(t *testing.T) {
	argv, env := helperArgv("sleep", "1h")
	w := startRunner(t, Config{Argv: argv, Env: env})

	var stdout, stderr bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", "echo out; echo err >&2; exit 5")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ch, err := w.Reaper().Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch); got != (Exit{Code: 5}) {
		t.Fatalf("exec exit = %v, want 5", got)
	}
	// The exit is published after the output was copied.
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if _, ok := <-ch; ok {
		t.Fatal("exit channel not closed after its value")
	}
	select {
	case <-w.Done():
		t.Fatalf("workload ended early: %v", w.Wait())
	default:
	}
	w.Stop()
	if got := w.Wait(); got.Signal != syscall.SIGTERM {
		t.Fatalf("workload exit = %v, want SIGTERM", got)
	}
}

func TestOutputDrainBoundsWaitForDescendantHoldingPipe(t *testing.T) {
	const drain = 200 * time.Millisecond
	r := newReaper(t, ReaperConfig{OutputDrain: drain})
	out := newLines()
	// The grandchild inherits stdout and keeps it open for an hour.
	cmd := exec.Command("/bin/sh", "-c", `echo hi; "$0" 1h & echo $!`, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=sleep")
	cmd.Stdout = out
	start := time.Now()
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	e := receive(t, ch)
	elapsed := time.Since(start)
	got := out.Lines()
	if len(got) != 2 || got[0] != "hi" {
		t.Fatalf("output = %q, want hi and a pid", got)
	}
	gpid, err := strconv.Atoi(got[1])
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(gpid, syscall.SIGKILL)
	waitGone(t, gpid) // reaped as an orphan before the reaper closes
	if e != (Exit{}) {
		t.Fatalf("exit = %v", e)
	}
	if elapsed < drain {
		t.Fatalf("exit published after %v, before the drain %v ended", elapsed, drain)
	}
}

func TestKillSignalsChildGroupUntilReaped(t *testing.T) {
	r := newReaper(t, ReaperConfig{})
	cmd := helperCommand("sleep", "1h")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Fatalf("child pgid = %d, want its own group %d", pgid, pid)
	}
	if err := r.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch); got != (Exit{Code: 128 + int(syscall.SIGUSR2), Signal: syscall.SIGUSR2}) {
		t.Fatalf("exit = %v", got)
	}
	if err := r.Kill(pid, syscall.SIGKILL); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Kill after reaping = %v, want os.ErrProcessDone", err)
	}
}

func TestSecondReaperIsRefused(t *testing.T) {
	newReaper(t, ReaperConfig{})
	if r, err := NewReaper(ReaperConfig{}); !errors.Is(err, ErrReaperActive) {
		if r != nil {
			r.Close()
		}
		t.Fatalf("second NewReaper = %v, want ErrReaperActive", err)
	}
}

func TestStartRefusesCommandContextAndClosedReaper(t *testing.T) {
	r, err := NewReaper(ReaperConfig{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := r.Start(exec.CommandContext(ctx, "/bin/sh", "-c", "exit 0")); err == nil || !strings.Contains(err.Error(), "CommandContext") {
		t.Errorf("Start(CommandContext) = %v, want refusal", err)
	}
	r.Close()
	if _, err := r.Start(exec.Command("/bin/sh", "-c", "exit 0")); !errors.Is(err, ErrReaperClosed) {
		t.Errorf("Start after Close = %v, want ErrReaperClosed", err)
	}
}

func TestCloseClosesExitChannelOfRunningChild(t *testing.T) {
	r, err := NewReaper(ReaperConfig{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	out := newLines()
	cmd := helperCommand("sleep", "1h")
	cmd.Stdout = out // a copy goroutine that Close must end
	ch, err := r.Start(cmd)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	r.Close()
	if _, ok := <-ch; ok {
		t.Fatal("exit published for a child that still runs")
	}
	cmd.Process.Kill()
	// Our child, unreaped now that no reaper runs: collect it ourselves.
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(cmd.Process.Pid, &ws, 0, nil); err != nil {
		t.Fatalf("wait4 %d: %v", cmd.Process.Pid, err)
	}
}

func TestSubreaperAttributeRestoredOnClose(t *testing.T) {
	if was, _ := isSubreaper(); was {
		t.Skip("the test process is a subreaper already")
	}
	r, err := NewReaper(ReaperConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if is, _ := isSubreaper(); !is {
		t.Error("not a subreaper while the reaper is open")
	}
	r.Close()
	if is, _ := isSubreaper(); is {
		t.Error("still a subreaper after Close")
	}
}

// BenchmarkStartAndReap measures one child's round trip through the
// Reaper: fork and exec of /bin/sh, registration, SIGCHLD, reap, publish.
func BenchmarkStartAndReap(b *testing.B) {
	r, err := NewReaper(ReaperConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for b.Loop() {
		ch, err := r.Start(exec.Command("/bin/sh", "-c", "exit 0"))
		if err != nil {
			b.Fatal(err)
		}
		if e := <-ch; e.Code != 0 {
			b.Fatalf("exit %v", e)
		}
	}
}
