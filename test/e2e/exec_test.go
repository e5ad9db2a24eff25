package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/test/binaries"
)

// execGateway is a real gateway binary serving one connected sandbox,
// "web", whose workload is workload.
func execGateway(t *testing.T, workload ...string) (*gatewayProc, string) {
	t.Helper()
	dir := binaries.TempDir(t, "skx")
	g := startGatewayBinary(t, filepath.Join(dir, "state"))
	t.Cleanup(func() {
		g.cli("sandbox", "delete", "web")
		g.kill()
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			t.Logf("gateway log:\n%s", logs)
		}
	})
	if _, err := g.cli(append([]string{"sandbox", "create", "web", "--start", "--"}, workload...)...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "sandbox web connected", func() bool {
		all := g.list()
		return len(all) == 1 && all[0].Connected
	}, func() string { return fmt.Sprintf("%+v", g.list()) })
	return g, dir
}

// screen is the master side of a pseudo-terminal the test opened, and
// everything read from it so far.
type screen struct {
	master   *os.File
	masterFD int // for ioctls: Fd would make master blocking
	tty      *os.File
	mu       sync.Mutex
	buf      bytes.Buffer
	done     chan struct{}
}

func openScreen(t *testing.T, rows, cols uint16) *screen {
	t.Helper()
	// Non-blocking, so that closing it ends a read in progress.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &screen{master: master, masterFD: fd, tty: tty, done: make(chan struct{})}
	s.resize(t, rows, cols)
	go func() {
		defer close(s.done)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		tty.Close()
		master.Close()
		<-s.done
	})
	return s
}

func (s *screen) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(s.masterFD, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("resize the terminal: %v", err)
	}
}

func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *screen) typeIn(t *testing.T, keys string) {
	t.Helper()
	if _, err := s.master.Write([]byte(keys)); err != nil {
		t.Fatalf("type %q: %v", keys, err)
	}
}

// await waits until the screen shows want after what it showed at from.
func (s *screen) await(t *testing.T, from int, want string) int {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%q on the screen", want), func() bool {
		return strings.Contains(s.text()[from:], want)
	}, func() string { return fmt.Sprintf("%q", s.text()[from:]) })
	return len(s.text())
}

func (s *screen) canonical(t *testing.T) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(s.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ICANON != 0 && tio.Lflag&unix.ECHO != 0
}

func TestExecInteractiveShellOnATerminal(t *testing.T) {
	g, _ := execGateway(t, "sleep", "600")
	scr := openScreen(t, 24, 80)
	if !scr.canonical(t) {
		t.Fatal("a fresh terminal is not in canonical mode")
	}
	cli := exec.Command(binaries.Gateway, "--state-dir", g.state, "sandbox", "exec", "-it", "web", "--", "sh")
	cli.Env = append(os.Environ(), "TERM=xterm-test")
	cli.Stdin, cli.Stdout, cli.Stderr = scr.tty, scr.tty, scr.tty
	// The CLI leads a session whose controlling terminal is the test's, as
	// in an operator's shell: resizes reach it as SIGWINCH.
	cli.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitErr = cli.Wait()
	}()
	t.Cleanup(func() {
		cli.Process.Kill()
		<-exited
	})

	at := 0
	scr.typeIn(t, "echo $((6*7)) $TERM\n")
	at = scr.await(t, at, "42 xterm-test")
	scr.typeIn(t, "stty size\n")
	at = scr.await(t, at, "24 80")
	scr.resize(t, 40, 132)
	waitFor(t, 20*time.Second, "the resize reached the sandbox's terminal", func() bool {
		scr.typeIn(t, "stty size\n")
		time.Sleep(100 * time.Millisecond)
		return strings.Contains(scr.text()[at:], "40 132")
	}, func() string { return fmt.Sprintf("%q", scr.text()[at:]) })
	at = len(scr.text())
	// ^C interrupts the foreground job in the sandbox, not the CLI.
	scr.typeIn(t, "sleep 100\n")
	time.Sleep(300 * time.Millisecond)
	scr.typeIn(t, "\x03")
	scr.typeIn(t, "echo still-$((2+3))\n")
	scr.await(t, at, "still-5")
	if scr.canonical(t) {
		t.Fatal("the operator's terminal is not in raw mode during exec -t")
	}
	// ^D ends the shell; its last status is the CLI's.
	scr.typeIn(t, "(exit 5)\n")
	time.Sleep(200 * time.Millisecond)
	scr.typeIn(t, "\x04")
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 5 {
			t.Fatalf("gateway exec -it ended with %v, want exit status 5; screen %q", waitErr, scr.text())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("^D did not end exec -it; screen %q", scr.text())
	}
	if !scr.canonical(t) {
		t.Fatal("the operator's terminal was left in raw mode")
	}
}

func TestExecInteractivePipesATarArchive(t *testing.T) {
	g, dir := execGateway(t, "sleep", "600")
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for _, d := range []string{filepath.Join(src, "sub"), dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("sandkey streams stdin\n"), 400000) // 8.8 MB: far over the one-piece limit
	files := map[string][]byte{"a.txt": []byte("alpha\n"), "sub/big.bin": big}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pipe := fmt.Sprintf("tar c -C %s . | %s --state-dir %s sandbox exec -i web -- tar x -C %s", src, binaries.Gateway, g.state, dst)
	if out, err := exec.Command("sh", "-c", pipe).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", pipe, err, out)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after the tar pipe: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
}

func TestExecOperatorLosingTheConnectionEndsTheProcessGroup(t *testing.T) {
	g, dir := execGateway(t, "sleep", "600")
	for _, mode := range []string{"-i", "-it"} {
		t.Run(mode, func(t *testing.T) {
			pidFile := filepath.Join(dir, "bg"+mode+".pid")
			cli := exec.Command(binaries.Gateway, "--state-dir", g.state, "sandbox", "exec", mode, "web", "--",
				// The child ignores SIGHUP, so only a kill of the whole group
				// ends it, not the terminal's hangup.
				"sh", "-c", "trap '' HUP; sleep 300 & echo $! > "+pidFile+"; wait")
			if mode == "-it" {
				// On a terminal the command leads a session of its own in
				// the sandbox; its whole group must go too.
				scr := openScreen(t, 24, 80)
				cli.Stdin, cli.Stdout, cli.Stderr = scr.tty, scr.tty, scr.tty
				cli.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			} else {
				stdin, err := cli.StdinPipe() // held open: the exec waits on
				if err != nil {
					t.Fatal(err)
				}
				defer stdin.Close()
			}
			if err := cli.Start(); err != nil {
				t.Fatal(err)
			}
			var pid int
			waitFor(t, 20*time.Second, "the exec's background child started", func() bool {
				b, err := os.ReadFile(pidFile)
				pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil && pid > 0
			}, func() string { return "no pid file" })
			cli.Process.Kill() // the operator's connection drops without a word
			cli.Wait()
			waitFor(t, 20*time.Second, fmt.Sprintf("background child %d killed", pid), func() bool {
				return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || isZombie(pid)
			}, func() string { return "still running" })
		})
	}
}

// isZombie reports whether pid has exited and waits for its parent.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func TestSandboxLogsFollowsTheWorkloadsOutput(t *testing.T) {
	g, _ := execGateway(t, "sh", "-c", "echo first-line; sleep 2; echo second-line; sleep 600")
	waitFor(t, 20*time.Second, "first-line in sandbox logs", func() bool {
		out, err := g.cli("sandbox", "logs", "web")
		return err == nil && strings.Contains(string(out), "first-line")
	}, func() string { out, err := g.cli("sandbox", "logs", "web"); return fmt.Sprintf("%s %v", out, err) })

	cli := exec.Command(binaries.Gateway, "--state-dir", g.state, "sandbox", "logs", "-f", "web")
	pr, pw := io.Pipe()
	cli.Stdout = pw
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var mu sync.Mutex
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor(t, 20*time.Second, "second-line followed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(out.String(), "second-line")
	}, func() string { mu.Lock(); defer mu.Unlock(); return out.String() })
	cli.Process.Signal(syscall.SIGINT)
	err := cli.Wait()
	pw.Close()
	<-copied
	if err != nil {
		t.Fatalf("logs -f interrupted: %v, want a clean exit", err)
	}
}
