package tokendir

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkLayoutFloor is the least any writer of the layout of DESIGN.md
// §4 pays per write on this machine's kernel: the bare system calls of
// one generation (make it, write the token, link the unchanged JWKS,
// close it to 0500, swap ..data, remove the generation before the
// previous one), on a directory held open, with no lock, no listing and
// no check. BenchmarkWrite over it is what Writer's guarantees add (a
// shared flock, repairing what it finds, refusing what another uid could
// have planted).
//
// plain-rename is the token alone replaced by a rename, a layout §4 does
// not allow (no ..data swap, no JWKS beside it): the floor under a
// different contract.
func BenchmarkLayoutFloor(b *testing.B) {
	token := stamp("floor", 1000)
	b.Run("atomic-writer", func(b *testing.B) {
		fd := tmpfsDir(b)
		gen := func(i int) string { return fmt.Sprintf("..g%09d", i) }
		for i := range 2 {
			mustOK(b, unix.Mkdirat(fd, gen(i), 0o700))
			writeAt(b, fd, gen(i)+"/"+JWKSFile, []byte(`{"keys":[]}`))
		}
		i := 1
		for b.Loop() {
			i++
			mustOK(b, unix.Mkdirat(fd, gen(i), 0o700))
			writeAt(b, fd, gen(i)+"/"+TokenFile, token)
			mustOK(b, unix.Linkat(fd, gen(i-1)+"/"+JWKSFile, fd, gen(i)+"/"+JWKSFile, 0))
			mustOK(b, unix.Fchmodat(fd, gen(i), 0o500, 0))
			mustOK(b, unix.Symlinkat(gen(i), fd, dataTmpLink))
			mustOK(b, unix.Renameat(fd, dataTmpLink, fd, dataLink))
			old := gen(i - 2)
			unix.Unlinkat(fd, old+"/"+TokenFile, 0) // the first generations have none
			mustOK(b, unix.Unlinkat(fd, old+"/"+JWKSFile, 0))
			mustOK(b, unix.Unlinkat(fd, old, unix.AT_REMOVEDIR))
		}
	})
	b.Run("plain-rename", func(b *testing.B) {
		fd := tmpfsDir(b)
		for b.Loop() {
			writeAt(b, fd, ".token.tmp", token)
			mustOK(b, unix.Renameat(fd, ".token.tmp", fd, TokenFile))
		}
	})
}

// tmpfsDir opens a new directory on /dev/shm, a tmpfs as the gateway's
// token root is.
func tmpfsDir(b *testing.B) int {
	dir, err := os.MkdirTemp("/dev/shm", "sk-floor")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := RemoveDir(dir); err != nil {
			b.Error(err)
		}
	})
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

func writeAt(b *testing.B, dirfd int, name string, data []byte) {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o400)
	if err != nil {
		b.Fatal(err)
	}
	_, err = unix.Write(fd, data)
	mustOK(b, err)
	mustOK(b, unix.Close(fd))
}

func mustOK(b *testing.B, err error) {
	if err != nil {
		b.Helper()
		b.Fatal(err)
	}
}
