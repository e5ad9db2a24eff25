// Package unixsock removes the unix socket files that a process which is
// gone left behind, and never one that something still serves on.
//
// A socket file outlives its listener when the process dies without
// unlinking it, and a new listener cannot bind its path until the file is
// removed. Removing it blindly would unlink a live server's socket from
// under it (a second gateway started by mistake, a virtiofsd still in
// use), so RemoveStale first asks a probe whether anything serves on it:
//
//   - Dialled: a dial to the socket fails with ECONNREFUSED only when
//     nothing listens. For servers that take any number of connections.
//   - Listening: /proc/net/unix lists the path with the listening flag.
//     For servers that serve their first connection only (virtiofsd,
//     which a probe connection would take).
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrServing is the error, wrapped, of RemoveStale for a socket something
// still serves on.
var ErrServing = errors.New("something still serves on the socket")

// A Probe reports whether something serves on the unix socket at path, or
// an error when it cannot tell.
type Probe func(path string) (bool, error)

// RemoveStale removes the unix socket at path once probe has found that
// nothing serves on it. It refuses, with an error matching ErrServing, a
// socket something serves on, and refuses anything that is not a socket
// or that probe cannot judge. A missing path is no error.
func RemoveStale(path string, probe Probe) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket (mode %s); refusing to remove it: remove it yourself or choose another path", path, fi.Mode())
	}
	serving, err := probe(path)
	if err != nil {
		return fmt.Errorf("probe existing socket %s: %w", path, err)
	}
	if serving {
		return fmt.Errorf("%s: %w", path, ErrServing)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// dialTimeout bounds Dialled's dial.
const dialTimeout = time.Second

// Dialled probes by dialling: refused means nothing serves.
func Dialled(path string) (bool, error) {
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err == nil {
		c.Close()
		return true, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	return false, err
}

// soAcceptCon is the flag /proc/net/unix shows for a listening socket
// (__SO_ACCEPTCON).
const soAcceptCon = 0x10000

// Listening probes without connecting: it reports whether a unix socket
// bound to path listens, from /proc/net/unix ("Num RefCount Protocol
// Flags Type St Inode Path"), which lists the sockets of this process's
// network namespace.
func Listening(path string) (bool, error) {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasSuffix(line, " "+path) { // the path may hold spaces
			continue
		}
		if flags, err := strconv.ParseUint(f[3], 16, 32); err == nil && flags&soAcceptCon != 0 {
			return true, nil
		}
	}
	return false, nil
}
