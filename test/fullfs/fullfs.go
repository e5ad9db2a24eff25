// Package fullfs gives tests a file system that fills up for real: a
// small tmpfs mounted over a directory, and a way to fill it to ENOSPC.
// Mounting needs root (CAP_SYS_ADMIN); without it a test is skipped, or
// fails under CI=true, where a missing dependency must not pass silently.
package fullfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// Mount mounts a tmpfs of size bytes, mode 0700, over dir (which must
// exist) and unmounts it when the test ends. Register it after anything
// whose cleanup still needs dir's contents: cleanups run last-in first-out.
func Mount(t testing.TB, dir string, size int) {
	t.Helper()
	mount(t, dir, "mode=0700,size="+strconv.Itoa(size))
}

// MountFull mounts over dir (which must exist) a tmpfs that is full from
// the start: it has no inode left, so creating anything in it fails with
// ENOSPC, and no cleanup of what is in it (nothing is) makes room, as
// deleting a Fill file would for a writer that repairs its directory.
// It is unmounted when the test ends.
func MountFull(t testing.TB, dir string) {
	t.Helper()
	mount(t, dir, "mode=0700,size=64k,nr_inodes=1")
}

func mount(t testing.TB, dir, options string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, options); err != nil {
		testmain.SkipIfMissing(t, fmt.Errorf("mount a tmpfs over %s (needs root): %w", dir, err), true)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// Fill creates path and writes it until its file system is full. Remove
// path to give the space back.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}
