package tokendir

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// The writer works on the token directory through its descriptor only:
// every call is relative to it (the *at system calls) and never follows a
// symlink, so whatever a sandbox plants in the directory, the writer never
// reads, changes or removes anything outside it.

// maxRemoveDepth bounds the nesting removeEntry descends: each level holds
// a descriptor, and nothing the writer makes is more than one level deep.
const maxRemoveDepth = 32

// dirent is one directory entry, with its type as getdents reports it.
type dirent struct {
	name string
	typ  uint8
}

var direntBuffers = sync.Pool{New: func() any { b := make([]byte, 8192); return &b }}

// readDir lists the directory open at fd (from its current offset: a
// fresh descriptor lists it all), without "." and "..". It reads until
// getdents returns nothing: tmpfs may return a short batch before the end. An entry whose
// type the file system does not report is stat'ed, never followed.
func readDir(fd int) ([]dirent, error) {
	bufp := direntBuffers.Get().(*[]byte)
	defer direntBuffers.Put(bufp)
	buf := *bufp
	var entries []dirent
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return entries, nil
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			typ := buf[off+18]
			name := buf[off+19 : off+reclen]
			if i := indexNUL(name); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if s := string(name); s != "." && s != ".." {
				if typ == unix.DT_UNKNOWN {
					typ = statType(fd, s)
				}
				entries = append(entries, dirent{name: s, typ: typ})
			}
		}
	}
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

func statType(fd int, name string) uint8 {
	var st unix.Stat_t
	if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return unix.DT_UNKNOWN
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFREG:
		return unix.DT_REG
	}
	return unix.DT_UNKNOWN
}

// readlink reads the symlink name of the directory open at fd. A target
// too long for any name the writer makes reads as "", which matches none.
func readlink(fd int, name string) (string, error) {
	var buf [256]byte
	n, err := unix.Readlinkat(fd, name, buf[:])
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", name, err)
	}
	if n == len(buf) {
		return "", nil
	}
	return string(buf[:n]), nil
}

// openDirBeneath opens the directory name of the directory open at fd,
// refusing a symlink.
func openDirBeneath(fd int, name string) (int, error) {
	for {
		d, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return d, err
		}
	}
}

// removeEntry removes name from the directory open at fd, whatever it is:
// a symlink is unlinked (never followed), a directory is emptied and
// removed. known lists names a directory is expected to hold, so the
// common case (an old generation) needs no listing; anything else in it
// is found by listing and removed too. A missing name is not an error.
func removeEntry(fd int, name string, known map[string][]byte) error {
	return removeAt(fd, name, known, 0)
}

// removeGenerationDir removes a directory the listing showed, such as an
// old generation: like removeEntry, without first trying it as a file.
func removeGenerationDir(fd int, name string, known map[string][]byte) error {
	return removeDir(fd, name, known, 0)
}

func removeAt(fd int, name string, known map[string][]byte, depth int) error {
	err := unix.Unlinkat(fd, name, 0)
	switch err {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR:
		return removeDir(fd, name, known, depth)
	default:
		return fmt.Errorf("remove %s: %w", name, err)
	}
}

func removeDir(fd int, name string, known map[string][]byte, depth int) error {
	if depth >= maxRemoveDepth {
		return fmt.Errorf("remove %s: nested deeper than %d directories", name, maxRemoveDepth)
	}
	d, err := openDirBeneath(fd, name)
	switch err {
	case nil:
	case unix.ENOENT:
		return nil
	case unix.ENOTDIR, unix.ELOOP: // replaced since it was listed
		return removeAt(fd, name, nil, depth)
	default:
		return fmt.Errorf("remove %s: %w", name, err)
	}
	defer unix.Close(d)
	// A generation is 0500: emptying it takes write permission, which
	// only a gateway without CAP_DAC_OVERRIDE must grant itself first.
	// Without the right to (another owner's directory) the removal fails.
	writable := false
	for k := range known {
		if unix.Unlinkat(d, k, 0) == unix.EACCES && !writable {
			writable = unix.Fchmod(d, uint32(dirMode)) == nil
			_ = unix.Unlinkat(d, k, 0)
		}
	}
	err = unix.Unlinkat(fd, name, unix.AT_REMOVEDIR)
	if err == unix.ENOTEMPTY || err == unix.EEXIST {
		if !writable {
			_ = unix.Fchmod(d, uint32(dirMode))
		}
		err = removeContents(d, depth+1)
		if err == nil {
			err = unix.Unlinkat(fd, name, unix.AT_REMOVEDIR)
		}
	}
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// removeContents removes every entry of the directory open at fd.
func removeContents(fd int, depth int) error {
	entries, err := readDir(fd)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, removeAt(fd, e.name, nil, depth))
	}
	return errors.Join(errs...)
}
