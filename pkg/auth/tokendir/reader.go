package tokendir

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// MaxFileSize is the most a reader reads of one file: 64 KiB, far above a
// token or a JWKS, far below anything that could hurt the supervisor.
const MaxFileSize = 64 << 10

const (
	// readAttempts bounds the retries of a lookup racing the removal of an
	// old generation (ENOENT) or a rename (EAGAIN from openat2).
	readAttempts = 5
	// firstBackoff doubles after each failed attempt: 0.2+0.4+0.8+1.6 ms.
	firstBackoff = 200 * time.Microsecond
	// maxSymlinks matches the kernel's limit on symlinks in one lookup.
	maxSymlinks = 40
	// openFlags never block (a FIFO opens at once) and never leak the fd.
	openFlags = unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY
)

// Errors a read can wrap, for callers that tell causes apart.
var (
	ErrOutsideDir = errors.New("symlink resolves outside")
	ErrNotRegular = errors.New("not a regular file")
	ErrTooLarge   = errors.New("file exceeds the size limit")
)

// absentError is a lookup that failed because the directory, or the entry
// named in it, does not exist: no Write in progress explains it, so it is
// not retried (a gateway reading thousands of directories a reboot emptied
// would otherwise sleep through every retry of each).
type absentError struct{ err error }

func (e *absentError) Error() string { return e.err.Error() }
func (e *absentError) Unwrap() error { return e.err }

// errEscape is what the open functions return before the directory is known.
var errEscape = errors.New("escape")

// ReadToken reads the token file of dir; see ReadFile.
func ReadToken(dir string) ([]byte, error) {
	return ReadFile(dir, TokenFile)
}

// ReadFile reads dir/name, following symlinks only while they stay inside
// dir, refusing anything but a regular file of at most MaxFileSize bytes,
// and retrying a lookup that races a Write. Errors name the path and the
// cause; a missing file is fs.ErrNotExist.
func ReadFile(dir, name string) ([]byte, error) {
	return readFile(dir, name, openBeneath)
}

// openFunc opens name beneath the directory dirfd with openFlags.
type openFunc func(dirfd int, name string) (fd int, err error)

func readFile(dir, name string, open openFunc) ([]byte, error) {
	path := filepath.Join(dir, name)
	if !filepath.IsLocal(name) || filepath.Clean(name) != name {
		return nil, fmt.Errorf("read %s %s: name is not a clean relative path inside the directory", name, path)
	}
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		data, err := readOnce(dir, name, open)
		if err == nil {
			return data, nil
		}
		var absent *absentError
		if attempt == readAttempts || errors.As(err, &absent) || !(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAGAIN)) {
			return nil, fmt.Errorf("read %s %s: %w", name, path, err)
		}
		time.Sleep(backoff)
		backoff *= 2
	}
}

func readOnce(dir, name string, open openFunc) ([]byte, error) {
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, &absentError{fmt.Errorf("open directory %s: %w", dir, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer unix.Close(dirfd)

	fd, err := open(dirfd, name)
	if errors.Is(err, errEscape) {
		return nil, fmt.Errorf("%w %s", ErrOutsideDir, dir)
	}
	if errors.Is(err, unix.ENOENT) {
		// A Write never removes the entry itself, only what its links
		// resolve through: an entry that is not there is no race.
		var st unix.Stat_t
		if lerr := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(lerr, unix.ENOENT) {
			return nil, &absentError{err}
		}
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)

	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w (%s)", ErrNotRegular, describeMode(modeType(st.Mode)))
	}
	return readCapped(fd, st.Size)
}

// readCapped reads fd to its end, failing once it has read more than
// MaxFileSize bytes. sizeHint (from fstat) only sizes the first buffer.
func readCapped(fd int, sizeHint int64) ([]byte, error) {
	// One byte beyond the hint lets the read that returns EOF happen without
	// growing the buffer.
	buf := make([]byte, 0, min(max(sizeHint, 0), MaxFileSize)+1)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) > MaxFileSize {
			return nil, fmt.Errorf("%w of %d bytes", ErrTooLarge, MaxFileSize)
		}
	}
}

// openBeneath opens name with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS),
// or by hand where the kernel or a seccomp profile lacks openat2.
func openBeneath(dirfd int, name string) (int, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   openFlags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case err == nil:
		return fd, nil
	case err == unix.EXDEV:
		return -1, errEscape
	case err == unix.ENOSYS || err == unix.EPERM:
		return openBeneathByHand(dirfd, name)
	}
	return -1, err
}

// describeMode names a non-regular file type for error messages.
func describeMode(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeSymlink != 0:
		return "symlink"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "block device"
	case t == 0:
		return "regular file"
	}
	return m.Type().String()
}

// modeType converts the file type bits of a stat mode to an fs.FileMode.
func modeType(mode uint32) fs.FileMode {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}
