package tokendir

import (
	"strings"

	"golang.org/x/sys/unix"
)

// openBeneathByHand does in user space what openat2(RESOLVE_BENEATH) does in
// the kernel, for kernels without it. It walks name one component at a time,
// opening each with O_NOFOLLOW relative to its parent's descriptor, so no
// symlink is ever followed by the kernel. A symlink is read and its target
// spliced into the rest of the path; an absolute target, or a ".." above
// dirfd, is an escape. ".." goes back to the descriptor it came from, which
// stays right even if a directory is renamed meanwhile.
func openBeneathByHand(dirfd int, name string) (int, error) {
	var parents []int // descriptors of the directories walked into, innermost last
	defer func() {
		for _, fd := range parents {
			unix.Close(fd)
		}
	}()
	cur := func() int {
		if len(parents) == 0 {
			return dirfd
		}
		return parents[len(parents)-1]
	}

	rest := splitPath(name)
	links := 0
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		if comp == "." {
			continue
		}
		if comp == ".." {
			if len(parents) == 0 {
				return -1, errEscape
			}
			unix.Close(parents[len(parents)-1])
			parents = parents[:len(parents)-1]
			continue
		}

		last := len(rest) == 0
		flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			flags = openFlags | unix.O_NOFOLLOW
		}
		fd, err := unix.Openat(cur(), comp, flags, 0)
		if err == nil {
			if last {
				return fd, nil
			}
			parents = append(parents, fd)
			continue
		}
		if err != unix.ELOOP && err != unix.ENOTDIR {
			return -1, err
		}

		// ELOOP or ENOTDIR: a symlink (O_NOFOLLOW) or a file where a
		// directory was wanted. Only a symlink can be read as one.
		target, lerr := readlinkat(cur(), comp)
		if lerr != nil {
			return -1, err
		}
		if links++; links > maxSymlinks {
			return -1, unix.ELOOP
		}
		if strings.HasPrefix(target, "/") {
			return -1, errEscape
		}
		rest = append(splitPath(target), rest...)
	}
	// The path ended on a directory (e.g. "." or "sub/.."): open it like a
	// file, for fstat to refuse.
	return unix.Openat(cur(), ".", openFlags, 0)
}

// splitPath splits a relative path into its components, dropping empty ones
// and ".". A trailing slash becomes a final "." so that, as in the kernel,
// the component before it must be a directory.
func splitPath(p string) []string {
	var comps []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	if len(comps) > 0 && strings.HasSuffix(p, "/") {
		comps = append(comps, ".")
	}
	return comps
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 128; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
