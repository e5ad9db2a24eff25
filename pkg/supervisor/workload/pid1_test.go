package workload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the Runner for real as PID 1: the test binary re-executes
// itself in a new PID namespace (and a new mount namespace, to mount a /proc
// that shows only that namespace).

func runAsPID1(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	requireRoot(t)
	cmd := helperCommand(mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	return cmd
}

func TestAsPID1ReapsOrphansAndPropagatesExitCode(t *testing.T) {
	cmd := runAsPID1(t, "pid1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("supervisor as PID 1: %v, want exit 42; output:\n%s", err, out.String())
	}
	// Three orphans, some dead (zombies) before the workload exits, some
	// after; all reaped, none left in the namespace's /proc.
	if !strings.Contains(out.String(), "orphans=3 leftover=[]") {
		t.Fatalf("output:\n%s\nwant orphans=3 leftover=[]", out.String())
	}
}

func TestAsPID1ForwardsSIGTERMToWorkload(t *testing.T) {
	cmd := runAsPID1(t, "pid1-term")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // a no-op once it has exited
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("first line %q, want ready; stderr:\n%s", line, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("workload not ready within 20s")
	}
	// PID 1 ignores signals it has no handler for: the Runner must have one
	// and pass SIGTERM on.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("supervisor as PID 1: %v, want exit 7 from the workload's trap; stderr:\n%s", err, stderr.String())
	}
}

// helperPID1 is the supervisor side of TestAsPID1ReapsOrphansAndPropagatesExitCode.
func helperPID1() int {
	if err := becomeInit(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 90
	}
	// The workload leaves three children behind: one has exited before it
	// does (a zombie handed to us), two exit after.
	argv, env := helperArgv("orphan", "42", "100ms", "0s", "300ms", "500ms")
	r, err := Start(context.Background(), Config{Argv: argv, Env: env, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 91
	}
	defer r.Close()
	exit := r.Wait()
	leftover := waitOnlyInit(5 * time.Second)
	fmt.Printf("orphans=%d leftover=%v\n", r.Reaper().OrphansReaped(), leftover)
	return exit.Code
}

// helperPID1Term is the supervisor side of TestAsPID1ForwardsSIGTERMToWorkload.
func helperPID1Term() int {
	if err := becomeInit(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 90
	}
	r, err := Start(context.Background(), Config{
		Argv:   []string{"/bin/sh", "-c", `trap 'exit 7' TERM; echo ready; "$0" 1h & wait; exit 1`, os.Args[0]},
		Env:    append(os.Environ(), helperEnv+"=sleep"),
		Stdout: os.Stdout, Stderr: os.Stderr,
		Grace: time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 91
	}
	defer r.Close()
	return r.Wait().Code
}

// becomeInit checks that this process is PID 1 and mounts a /proc of its
// own PID namespace, privately.
func becomeInit() error {
	if pid := os.Getpid(); pid != 1 {
		return fmt.Errorf("helper runs as pid %d, want 1", pid)
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return nil
}

// waitOnlyInit waits until /proc lists no process but PID 1, and returns
// the ones left (with their states) if that does not happen in time.
func waitOnlyInit(limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	for {
		var left []string
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if pid, err := strconv.Atoi(e.Name()); err == nil && pid != 1 {
				left = append(left, fmt.Sprintf("%d(%s)", pid, procStatus(pid)))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}
