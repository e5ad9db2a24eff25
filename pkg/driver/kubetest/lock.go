package kubetest

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Lock kinds for lockFile.
const (
	lockExclusive = unix.LOCK_EX
	lockShared    = unix.LOCK_SH
)

// fileLock is a flock(2) on a file that the last holder removes. The
// kernel drops the lock when its holder dies, so a crashed test run never
// keeps one.
type fileLock struct {
	path string
	f    *os.File
}

// lockFile takes a lock on path, exclusive or shared, waiting or not. It
// returns (nil, nil) when wait is false and the lock is taken. A lock on
// a file that another holder removed meanwhile is dropped and taken again
// on the new file, so that two holders never lock different files of one
// path.
func lockFile(path string, how int, wait bool) (*fileLock, error) {
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), how); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if sameFile(f, path) {
			return &fileLock{path: path, f: f}, nil
		}
		f.Close() // removed by its last holder meanwhile: lock the new one
	}
}

// sameFile reports whether the open file f is still the file at path.
func sameFile(f *os.File, path string) bool {
	var held, now unix.Stat_t
	if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &now) != nil {
		return false
	}
	return held.Dev == now.Dev && held.Ino == now.Ino
}

// record writes s into the locked file (for a later holder to read).
func (l *fileLock) record(s string) error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt([]byte(s), 0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// recorded reads what an earlier holder recorded in the file.
func (l *fileLock) recorded() (string, error) {
	data, err := os.ReadFile(l.path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", l.path, err)
	}
	return string(data), nil
}

// tryExclusive turns a shared lock into an exclusive one if no one else
// holds the file, and reports whether it did; otherwise the shared lock
// stays.
func (l *fileLock) tryExclusive() bool {
	return unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}

// share turns an exclusive lock into a shared one.
func (l *fileLock) share() error {
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_SH); err != nil {
		return fmt.Errorf("lock %s shared: %w", l.path, err)
	}
	return nil
}

// release drops the lock; remove first removes the file, which only an
// exclusive holder may do.
func (l *fileLock) release(remove bool) error {
	if l == nil {
		return nil
	}
	var err error
	if remove {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("remove lock %s: %w", l.path, rerr)
		}
	}
	l.f.Close()
	return err
}
