// Package dirwatchtest helps tests check what a process spends of the
// host user's inotify instances.
package dirwatchtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// InotifyInstances counts the inotify instances process pid holds (its
// file descriptors on anon_inode:inotify).
func InotifyInstances(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("count inotify instances of process %d: %w", pid, err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == "anon_inode:inotify" {
			n++
		}
	}
	return n, nil
}
