package vmfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/unixsock"
)

// DefaultVirtiofsd is where Debian's QEMU package installs virtiofsd.
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// socketWait bounds the wait for virtiofsd's socket, which QEMU connects to
// at its start; virtiofsd creates it within milliseconds.
const socketWait = 10 * time.Second

// Virtiofsd describes one virtiofsd serving one VM.
type Virtiofsd struct {
	// Binary defaults to DefaultVirtiofsd.
	Binary string
	// Dir is the shared directory: the sandbox's token directory.
	Dir string
	// Socket is the vhost-user socket virtiofsd creates and QEMU connects
	// to; an old file there is removed first.
	Socket string
	// Log receives virtiofsd's standard output and error.
	Log *os.File
}

// Start starts virtiofsd with the directory read-only in its view (see
// the package doc) and cache=none, in a session of its own so that it
// outlives the gateway, and waits until its socket exists. It returns
// virtiofsd's pid; the caller owns the process (virtiofsd ends by itself
// when its VM disconnects) and must collect its exit when it is its
// parent.
func (v Virtiofsd) Start() (int, error) {
	bin := v.Binary
	if bin == "" {
		bin = DefaultVirtiofsd
	}
	if v.Dir == "" || !filepath.IsAbs(v.Dir) || v.Socket == "" {
		return 0, fmt.Errorf("start virtiofsd: need an absolute shared directory and a socket path, got %q and %q", v.Dir, v.Socket)
	}
	if err := removeStaleSocket(v.Socket); err != nil {
		return 0, fmt.Errorf("start virtiofsd: %w", err)
	}
	cmd := exec.Command(bin, "--socket-path="+v.Socket, "-o", "source="+v.Dir, "-o", "cache=none")
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = v.Log, v.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := startWithReadOnlyDir(cmd, v.Dir); err != nil {
		return 0, fmt.Errorf("start virtiofsd %s for %s: %w", bin, v.Dir, err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	if err := waitSocket(v.Socket, pid, socketWait); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		return 0, fmt.Errorf("start virtiofsd %s for %s: %w", bin, v.Dir, err)
	}
	return pid, nil
}

// startWithReadOnlyDir starts cmd in a mount namespace where dir is a
// read-only bind mount of itself: steps 1 to 5 of the package doc.
func startWithReadOnlyDir(cmd *exec.Cmd, dir string) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, whose mount namespace is no longer
		// the process's, ends with this goroutine.
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread cannot end, and its namespace is what
			// /proc/<pid> shows: try again on another thread, which the
			// retry gets because this one stays locked meanwhile.
			errc <- startWithReadOnlyDir(cmd, dir)
			runtime.UnlockOSThread()
			return
		}
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("new mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
				return fmt.Errorf("make mounts slaves: %w", err)
			}
			if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s: %w", dir, err)
			}
			const ro = unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
			if err := unix.Mount("", dir, "", ro, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", dir, err)
			}
			return cmd.Start()
		}()
	}()
	return <-errc
}

// waitSocket waits until a socket listens at path, failing early if pid
// ends. The file appears at bind(), before listen(): a VMM connecting in
// between is refused. Probing with a connection is no way to tell, since
// virtiofsd serves the first connection only, so the listening state is
// read from /proc/net/unix.
func waitSocket(path string, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if listening(path) {
			return nil
		}
		var ws unix.WaitStatus
		if wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && wpid == pid {
			return fmt.Errorf("virtiofsd exited (%v) before creating its socket %s", exitString(ws), path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("virtiofsd created no socket %s within %s", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removeStaleSocket removes the socket a virtiofsd that has ended left
// at path, and refuses to remove a live one or anything not a socket. A
// live one is told from /proc/net/unix, not by dialling: a probe
// connection would be the one connection a live virtiofsd serves.
func removeStaleSocket(path string) error {
	err := unixsock.RemoveStale(path, unixsock.Listening)
	if errors.Is(err, unixsock.ErrServing) {
		return fmt.Errorf("a virtiofsd still serves on %s: stop the sandbox's VM first", path)
	}
	return err
}

// listening reports whether a unix socket bound to path listens.
func listening(path string) bool {
	ok, _ := unixsock.Listening(path)
	return ok
}

func exitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
