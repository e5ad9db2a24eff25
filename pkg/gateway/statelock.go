package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LockFile is the name, in the state directory, of the file whose lock
// says which gateway owns the directory; it holds that gateway's PID.
const LockFile = "gateway.lock"

// StateLock is a gateway's exclusive hold on its state directory. It lasts
// until Close or the end of the process, however the process ends: it is
// a flock(2) on LockFile, which the kernel releases with the last file
// descriptor, and the descriptor is close-on-exec, so sandboxes started by
// the gateway never inherit it.
type StateLock struct {
	f *os.File
}

// StateDirInUseError is LockStateDir's refusal: another process holds the
// state directory.
type StateDirInUseError struct {
	Dir  string
	Lock string // the lock file
	PID  int    // the holder's, as it wrote it; 0 when not written yet
}

func (e *StateDirInUseError) Error() string {
	holder := "another gateway"
	if e.PID > 0 {
		holder = fmt.Sprintf("another gateway (PID %d)", e.PID)
	}
	return fmt.Sprintf("state directory %s is in use by %s, which holds %s: stop it first, or give this one another --state-dir",
		e.Dir, holder, e.Lock)
}

// LockStateDir takes the lock of the state directory dir (which must
// exist) without waiting, and writes this process's PID into the lock
// file. A directory another process holds is a *StateDirInUseError naming
// that process; nothing in dir is changed then. The lock file is never
// removed: a path unlinked while another process opens it would let two
// gateways hold two different locks.
func LockStateDir(dir string) (*StateLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600) // O_CLOEXEC is Go's default
	if err != nil {
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &StateDirInUseError{Dir: dir, Lock: path, PID: readLockPID(path)}
		}
		return nil, fmt.Errorf("lock state directory %s (%s): %w", dir, path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write PID into %s: %w", path, err)
	}
	return &StateLock{f: f}, nil
}

// readLockPID reads the holder's PID from the lock file; 0 if it has not
// written one yet.
func readLockPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Close releases the lock.
func (l *StateLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
