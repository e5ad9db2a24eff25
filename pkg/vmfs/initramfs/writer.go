// Package initramfs writes the archives a Linux kernel unpacks into its
// first root file system: cpio in the "newc" format (the only one the
// kernel reads), optionally gzip-compressed.
//
// The VM guest image is one such archive (the supervisor as /init, a
// toolbox, kernel modules, mount points, and /dev/console, without which
// init starts with no standard streams). The VM driver appends a second,
// uncompressed archive per start holding the sandbox's boot file: the
// kernel unpacks concatenated archives one after the other, compressed or
// not, the later ones adding to (or replacing files of) the earlier. An
// archive must start at a 4-byte offset of the whole image: Padding gives
// the zeros to put before it.
//
// The writer is deterministic: every entry has uid and gid 0, mtime 0 and
// an inode number counted from 1, so the same inputs give the same bytes.
// No tool is needed and no privilege: device nodes are only headers.
//
// Format (one entry): the magic "070701", thirteen 8-digit hex fields
// (inode, mode, uid, gid, nlink, mtime, file size, device major and minor,
// rdev major and minor, name size counting the NUL, checksum 0), the name
// and its NUL, zero padding to a multiple of 4, then the data, padded the
// same way. The archive ends with an entry named "TRAILER!!!".
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Mode bits of a newc header (they are the kernel's S_IF* values).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

const (
	magic   = "070701"
	trailer = "TRAILER!!!"
	// maxName bounds an entry's name; the kernel refuses longer ones
	// (PATH_MAX).
	maxName = 4095
)

// Writer writes one newc archive. Methods return the first error of any
// earlier call, so a sequence of writes can be checked once, at Close.
type Writer struct {
	w      io.Writer
	off    int64
	ino    uint32
	err    error
	closed bool
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Dir adds a directory. The kernel creates missing parents of no entry, so
// directories come before what they hold.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, modeDir|unixPerm(perm), 2, 0, 0, nil)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.entry(name, modeFile|unixPerm(perm), 1, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return w.fail(fmt.Errorf("initramfs: symlink %s: empty target", name))
	}
	return w.entry(name, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDevice adds a character device node.
func (w *Writer) CharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, modeCharDev|unixPerm(perm), 1, major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	err := w.write(trailer, 0, 1, 0, 0, nil)
	w.closed = true
	return err
}

// Len is the number of bytes written so far.
func (w *Writer) Len() int64 { return w.off }

// entry checks name and writes one entry.
func (w *Writer) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if w.closed && w.err == nil {
		w.err = errors.New("initramfs: write after Close")
	}
	clean, err := entryName(name)
	if err != nil {
		return w.fail(err)
	}
	return w.write(clean, mode, nlink, rmajor, rminor, data)
}

// entryName is name as the archive stores it: relative, cleaned, and
// naming something below the root.
func entryName(name string) (string, error) {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	switch {
	case clean == "" || clean == ".":
		return "", fmt.Errorf("initramfs: entry %q names the root", name)
	case clean == trailer:
		return "", fmt.Errorf("initramfs: entry %q is the trailer's name", name)
	case strings.ContainsRune(clean, 0):
		return "", fmt.Errorf("initramfs: entry %q holds a NUL byte", name)
	case len(clean) > maxName:
		return "", fmt.Errorf("initramfs: entry %.40q...: name longer than %d bytes", name, maxName)
	}
	return clean, nil
}

func (w *Writer) write(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if uint64(len(data)) > 0xffffffff {
		return w.fail(fmt.Errorf("initramfs: entry %s: %d bytes, over the format's 4 GiB", name, len(data)))
	}
	ino := uint32(0)
	if name != trailer {
		w.ino++
		ino = w.ino
	}
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		magic, ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.put([]byte(hdr))
	w.put([]byte(name))
	w.put([]byte{0})
	w.pad()
	w.put(data)
	w.pad()
	if w.err != nil {
		return fmt.Errorf("initramfs: write entry %s: %w", name, w.err)
	}
	return nil
}

func (w *Writer) put(b []byte) {
	if w.err != nil || len(b) == 0 {
		return
	}
	n, err := w.w.Write(b)
	w.off += int64(n)
	w.err = err
}

// pad writes zeros up to the next multiple of 4.
func (w *Writer) pad() {
	if n := (4 - w.off%4) % 4; n > 0 {
		w.put(make([]byte, n))
	}
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// unixPerm is m's permission bits as a header holds them, the sticky,
// setuid and setgid bits (which Go keeps apart) included.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	return p
}

// Padding returns the zeros that bring an image of size bytes to a 4-byte
// boundary, where the kernel looks for the next archive.
func Padding(size int64) []byte { return make([]byte, (4-size%4)%4) }
