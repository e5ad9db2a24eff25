package vminit

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/guest"
)

func writeBoot(t *testing.T, b guest.Boot) string {
	t.Helper()
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "boot.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartGuestAppliesTheBootEnvironmentAndArguments(t *testing.T) {
	const name = "SANDKEY_VMINIT_TEST_BOOT_VAR"
	t.Cleanup(func() { os.Unsetenv(name) })
	path := writeBoot(t, guest.Boot{Env: []string{name + "=from boot"}, Args: []string{"--", "sleep", "1"}})

	args, g, err := StartGuest(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Finish()
	if got := os.Getenv(name); got != "from boot" {
		t.Errorf("%s = %q after StartGuest, want the boot file's value", name, got)
	}
	if want := []string{"--", "sleep", "1"}; !reflect.DeepEqual(args, want) {
		t.Errorf("args = %q, want the boot file's %q", args, want)
	}
	// Arguments given on the kernel command line win.
	args, g, err = StartGuest(path, []string{"--", "true"})
	if err != nil || !reflect.DeepEqual(args, []string{"--", "true"}) {
		t.Errorf("StartGuest with arguments = %q, %v; want them kept", args, err)
	}
	g.Finish()
	// A VM booted without a driver's boot file keeps its arguments.
	args, g, err = StartGuest(filepath.Join(t.TempDir(), "none"), []string{"x"})
	if err != nil || !reflect.DeepEqual(args, []string{"x"}) {
		t.Errorf("StartGuest without a boot file = %q, %v; want the arguments unchanged", args, err)
	}
	g.Finish()
}

// openPTY returns a pseudo-terminal's master and the path of its slave: a
// stand-in for the guest's serial stop port, a tty too.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	rc, err := master.SyscallConn() // not Fd(), which would end read deadlines
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return master, "/dev/pts/" + strconv.Itoa(n)
}

// waitNoEcho waits until the watcher has opened the port and turned its
// echo off.
func waitNoEcho(t *testing.T, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		echo := true
		rc.Control(func(fd uintptr) {
			if tio, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil {
				echo = tio.Lflag&unix.ECHO != 0
			}
		})
		if !echo {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not turn the port's echo off")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStopPortRequestSignalsSIGTERMAgainUntilFinished(t *testing.T) {
	master, slave := openPTY(t)
	path := writeBoot(t, guest.Boot{StopPort: slave})
	terms := make(chan os.Signal, 16)
	signal.Notify(terms, syscall.SIGTERM)
	defer signal.Stop(terms)

	_, g, err := StartGuest(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Finish()
	waitNoEcho(t, slave)
	if _, err := master.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-terms:
		t.Fatal("SIGTERM before any stop request")
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := master.Write([]byte(guest.StopRequest + "\n")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		select {
		case <-terms:
		case <-time.After(5 * time.Second):
			t.Fatalf("SIGTERM %d not sent after the stop request", i+1)
		}
	}
	// Nothing is echoed back to the host.
	master.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 64)
	if n, _ := master.Read(buf); n > 0 {
		t.Errorf("the stop port echoed %q", buf[:n])
	}
}

func TestStopPortWatcherEndsWithItsContextWithoutStopping(t *testing.T) {
	_, slave := openPTY(t)
	for name, dev := range map[string]string{"open port": slave, "port never appears": filepath.Join(t.TempDir(), "ttyS9")} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var stops atomic.Int32
			var wg sync.WaitGroup
			wg.Go(func() { watchStopPort(ctx, dev, func() { stops.Add(1) }) })
			time.Sleep(100 * time.Millisecond)
			cancel()
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the watcher outlived its context")
			}
			if n := stops.Load(); n != 0 {
				t.Errorf("stop called %d times without a request", n)
			}
		})
	}
}

func TestEnvParamsMapsSandkeyVMVariablesToCmdlineKeys(t *testing.T) {
	got := EnvParams([]string{"SANDKEY_VM_TAG=auth", "SANDKEY_VM_ADDR=10.0.2.15/24", "SANDKEY_VM_SHARE-MOUNT=/m",
		"SANDKEY_VM_INIT=on", "SANDKEY_VM_=x", "SANDKEY_GATEWAY=tcp://x", "PATH=/bin", "NOEQUALS"})
	want := map[string]string{"tag": "auth", "addr": "10.0.2.15/24", "share_mount": "/m"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EnvParams = %v, want %v", got, want)
	}
	cfg := ConfigFromCmdline(EnvParams([]string{"SANDKEY_VM_TAG=sandkey-auth", "SANDKEY_VM_MODULES=/a.ko,/b.ko"}))
	if cfg.ShareTag != "sandkey-auth" || !reflect.DeepEqual(cfg.Modules, []string{"/a.ko", "/b.ko"}) {
		t.Errorf("Config from the environment = %+v", cfg)
	}
}
