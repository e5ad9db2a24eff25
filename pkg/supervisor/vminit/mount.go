package vminit

import (
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// kernelMount is one file system that init mounts.
type kernelMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// kernelMounts are the file systems every init mounts first, in order.
func kernelMounts() []kernelMount {
	return []kernelMount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		// Pseudo-terminals, for `sandbox exec -t`: devtmpfs has the /dev/ptmx
		// node, which serves the devpts instance mounted here.
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
}

// mountOnce mounts m unless its target is a mount point already.
func mountOnce(m kernelMount, log *zap.Logger) error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	mounted, err := isMountPoint(m.target)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	if mounted {
		log.Debug("already mounted", zap.String("target", m.target))
		return nil
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	log.Debug("mounted", zap.String("fstype", m.fstype), zap.String("target", m.target))
	return nil
}

// mountShare mounts the virtio-fs share tag read-only on dir.
func mountShare(tag, dir string, log *zap.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount virtio-fs share %q on %s: %w", tag, dir, err)
	}
	mounted, err := isMountPoint(dir)
	if err != nil {
		return fmt.Errorf("mount virtio-fs share %q on %s: %w", tag, dir, err)
	}
	if mounted {
		log.Debug("share already mounted", zap.String("tag", tag), zap.String("target", dir))
		return nil
	}
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount(tag, dir, "virtiofs", flags, ""); err != nil {
		return fmt.Errorf("mount virtio-fs share %q on %s: %w", tag, dir, err)
	}
	log.Info("mounted token share", zap.String("tag", tag), zap.String("target", dir))
	return nil
}

// isMountPoint reports whether dir is on another device than its parent.
// (A bind mount from the same file system is not seen, which is fine for
// the kernel file systems this package mounts.)
func isMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Stat(filepath.Join(dir, ".."), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}
