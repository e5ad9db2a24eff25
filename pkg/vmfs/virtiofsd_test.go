package vmfs

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireVirtiofsd skips without root or virtiofsd, except under CI, where
// scripts/vm-deps.sh has installed it and the tests run as root.
func requireVirtiofsd(t *testing.T) {
	t.Helper()
	var why string
	switch _, err := os.Stat(DefaultVirtiofsd); {
	case os.Geteuid() != 0:
		why = "needs root (virtiofsd sandboxes itself with namespaces)"
	case err != nil:
		why = fmt.Sprintf("no %s (scripts/vm-deps.sh installs qemu-system-x86): %v", DefaultVirtiofsd, err)
	default:
		return
	}
	testmain.SkipIfMissing(t, errors.New(why), true)
}

// startTestVirtiofsd starts virtiofsd on a new directory holding one file
// and ends it, by pid, when t ends.
func startTestVirtiofsd(t *testing.T) (pid int, dir, socket string) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "auth")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t1"), 0o400); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(root, "virtiofsd.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	socket = filepath.Join(root, "vfs.sock")
	pid, err = Virtiofsd{Dir: dir, Socket: socket, Log: log}.Start()
	if err != nil {
		out, _ := os.ReadFile(log.Name())
		t.Fatalf("Start: %v\nlog:\n%s", err, out)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
	})
	return pid, dir, socket
}

// sandboxedChild returns the pid of virtiofsd's sandboxed server, its
// child, or 0 while there is none.
func sandboxedChild(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	var child int
	fmt.Sscan(string(b), &child)
	return child
}

// mountFlags returns the per-mount options of the mount at mountPoint in
// pid's mount table, or "" when there is none.
func mountFlags(t *testing.T, pid int, mountPoint string) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint options ...
		fields := strings.Fields(s.Text())
		if len(fields) > 5 && fields[4] == mountPoint {
			flags = fields[5] // the last mount on a point is the visible one
		}
	}
	return flags
}

func TestVirtiofsdSeesTheShareReadOnlyAndTheHostDoesNot(t *testing.T) {
	requireVirtiofsd(t)
	pid, dir, socket := startTestVirtiofsd(t)

	// Once a VMM connects (this test stands in for QEMU), virtiofsd forks
	// its sandboxed server into new namespaces, and that pivots into the
	// share: its root must be the read-only bind.
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		server := sandboxedChild(pid)
		flags := ""
		if server != 0 {
			flags = mountFlags(t, server, "/")
		}
		if strings.Contains(","+flags+",", ",ro,") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("virtiofsd's server (pid %d) has its root mounted %q, want read-only", server, flags)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The host's mount table is untouched, and the gateway still writes.
	if got := mountFlags(t, os.Getpid(), dir); got != "" {
		t.Errorf("the host sees a mount on %s (%s); the read-only bind must stay in virtiofsd's namespace", dir, got)
	}
	if err := os.WriteFile(filepath.Join(dir, "token2"), []byte("t2"), 0o400); err != nil {
		t.Errorf("the host cannot write the shared directory: %v", err)
	}
}

func TestVirtiofsdStartErrorsNameTheCause(t *testing.T) {
	requireVirtiofsd(t)
	dir := t.TempDir()
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for _, tc := range []struct {
		name string
		v    Virtiofsd
		want string
	}{
		{"missing binary", Virtiofsd{Binary: "/nonexistent/virtiofsd", Dir: dir, Socket: filepath.Join(dir, "a.sock"), Log: log}, "/nonexistent/virtiofsd"},
		{"relative directory", Virtiofsd{Dir: "auth", Socket: filepath.Join(dir, "b.sock"), Log: log}, `"auth"`},
		{"missing directory", Virtiofsd{Dir: filepath.Join(dir, "gone"), Socket: filepath.Join(dir, "c.sock"), Log: log}, filepath.Join(dir, "gone")},
		{"exits early", Virtiofsd{Binary: "/bin/false", Dir: dir, Socket: filepath.Join(dir, "d.sock"), Log: log}, "exited (status 1) before creating its socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid, err := tc.v.Start()
			if err == nil {
				unix.Kill(pid, unix.SIGKILL)
				t.Fatalf("Start succeeded (pid %d)", pid)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestRemoveStaleSocketKeepsALiveOneSayingWhatToDo(t *testing.T) {
	// pkg/unixsock tests the rest; this pins the probe that never connects
	// and the message.
	live := filepath.Join(t.TempDir(), "vfs.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := removeStaleSocket(live); err == nil || !strings.Contains(err.Error(), "stop the sandbox's VM first") {
		t.Errorf("live socket: err = %v, want a refusal saying what to do", err)
	}
	if _, err := os.Lstat(live); err != nil {
		t.Errorf("live socket removed: %v", err)
	}
}
