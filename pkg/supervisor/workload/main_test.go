package workload

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// helperEnv selects a helper mode: the test binary re-executes itself as a
// workload, a grandchild, or a supervisor in a new PID namespace, so the
// tests need no binaries but /bin/sh.
const helperEnv = "SANDKEY_WORKLOAD_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "exit":
		code, _ := strconv.Atoi(args[0])
		return code
	case "sleep":
		d, _ := time.ParseDuration(args[0])
		time.Sleep(d)
		return 0
	case "signals":
		return helperSignals()
	case "await":
		// Prints ready, then "got <signo>" and exits 0 on signal args[0].
		n, _ := strconv.Atoi(args[0])
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.Signal(n))
		fmt.Println("ready")
		fmt.Printf("got %d\n", <-sigs)
		return 0
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "orphan":
		return helperOrphan(args)
	case "pid1":
		return helperPID1()
	case "pid1-term":
		return helperPID1Term()
	case "tty":
		return helperTTY()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 99
}

// helperSignals prints "got <signo>" for every forwarded signal and exits
// 0 once it has seen them all.
func helperSignals() int {
	sigs := make(chan os.Signal, len(forwarded))
	signal.Notify(sigs, forwarded...)
	fmt.Println("ready")
	seen := map[os.Signal]bool{}
	for len(seen) < len(forwarded) {
		sig := <-sigs
		seen[sig] = true
		fmt.Printf("got %d\n", sig.(syscall.Signal))
	}
	return 0
}

// helperOrphan ("orphan <code> <linger> <sleep>...") starts one grandchild
// per sleep, prints their pids, waits linger without reaping them (those
// that ended meanwhile are zombies) and exits with code.
func helperOrphan(args []string) int {
	code, _ := strconv.Atoi(args[0])
	linger, _ := time.ParseDuration(args[1])
	for _, d := range args[2:] {
		gc := helperCommand("sleep", d)
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 98
		}
		fmt.Println(gc.Process.Pid)
	}
	time.Sleep(linger)
	return code
}

// helperArgv is the argv and environment that run the test binary in mode.
func helperArgv(mode string, args ...string) (argv, env []string) {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return append([]string{exe}, args...), append(os.Environ(), helperEnv+"="+mode)
}

func helperCommand(mode string, args ...string) *exec.Cmd {
	argv, env := helperArgv(mode, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	return cmd
}

// lines is an io.Writer that hands every complete line to a channel, so a
// test can wait for a workload's output.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	all []string
	ch  chan string
}

func newLines() *lines { return &lines{ch: make(chan string, 1024)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line) // incomplete: keep for the next write
			return len(p), nil
		}
		line = strings.TrimSuffix(line, "\n")
		l.all = append(l.all, line)
		l.ch <- line
	}
}

// Lines returns every complete line written so far.
func (l *lines) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

// next waits for the next line.
func (l *lines) next(t *testing.T) string {
	t.Helper()
	select {
	case line := <-l.ch:
		return line
	case <-time.After(10 * time.Second):
		t.Fatalf("no output line within 10s; lines so far: %q", l.Lines())
		return ""
	}
}

// requireRoot skips a test that needs root, except under CI, where it must
// run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testmain.SkipIfMissing(t, errors.New("this test needs root (namespaces): run the tests as root"), true)
}

// waitGone waits until /proc/<pid> no longer exists: the process ended and
// was reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d still present (not reaped?): %s", pid, procStatus(pid))
}

// procStatus returns the State and PPid lines of /proc/<pid>/status.
func procStatus(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, _, _ := strings.Cut(s.Text(), ":"); k == "State" || k == "PPid" {
			out = append(out, s.Text())
		}
	}
	return strings.Join(out, "; ")
}
