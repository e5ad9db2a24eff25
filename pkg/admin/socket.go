package admin

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/sandkey/sandkey/pkg/session"
)

// maxSocketPath is the longest path a unix socket can be bound at
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// ListenUnix listens on the operator socket at path, mode 0600. The
// socket is bound in a private directory beside path, narrowed to 0600 and
// only then renamed to path, so it is never reachable with wider
// permissions whatever the process umask. A socket left by a gateway that
// is gone is replaced; a live one, or anything that is not a socket, is
// refused. Closing the listener removes the socket, unless another
// gateway has replaced it since.
func ListenUnix(path string) (net.Listener, error) {
	path = filepath.Clean(path)
	if err := session.RemoveStaleSocket(path); err != nil {
		return nil, fmt.Errorf("listen on operator socket %s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".admin")
	if err != nil {
		return nil, fmt.Errorf("listen on operator socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	bindPath := filepath.Join(tmp, "s")
	if len(bindPath) > maxSocketPath {
		return nil, fmt.Errorf("listen on operator socket %s: the path is too long for a unix socket (it is bound at %s first, and the limit is %d bytes): use a shorter state directory",
			path, bindPath, maxSocketPath)
	}
	l, err := bindPrivate(bindPath, path)
	if err != nil {
		return nil, fmt.Errorf("listen on operator socket %s: %w", path, err)
	}
	return l, nil
}

// bindPrivate binds tmpPath (in a 0700 directory), makes it 0600 and
// renames it to path.
func bindPrivate(tmpPath, path string) (*unixListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The listener must not unlink tmpPath on Close: after the rename,
	// the file it would unlink is path's, and only if still ours.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	fi, err := os.Lstat(tmpPath)
	if err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(tmpPath, path); err != nil {
		l.Close()
		return nil, err
	}
	return &unixListener{UnixListener: l, path: path, ours: fi}, nil
}

// unixListener removes its socket file on Close if the file is still the
// one it bound.
type unixListener struct {
	*net.UnixListener
	path string
	ours os.FileInfo

	closeOnce sync.Once
	closeErr  error
}

// Addr is the socket's final path, not the one it was bound at.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.UnixListener.Close()
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.ours) {
			os.Remove(l.path)
		}
	})
	return l.closeErr
}
