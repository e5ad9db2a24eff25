package tokendir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openers are the two ways of resolving beneath the directory; every reader
// test runs with both.
var openers = []struct {
	name string
	open openFunc
}{
	{"openat2", openBeneath},
	{"by hand", openBeneathByHand},
}

// readTestDir makes <tmp>/outside (holding a secret and a token) beside
// <tmp>/auth, a published token directory, and returns both paths.
func readTestDir(t *testing.T) (dir, outside string) {
	t.Helper()
	top := t.TempDir()
	outside = filepath.Join(top, "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "token"), "outside-token")
	w, err := NewWriter(filepath.Join(top, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(payload("inside-token")); err != nil {
		t.Fatal(err)
	}
	return w.Dir(), outside
}

func TestReadFileFollowsSymlinksThatStayInside(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		read  string
		want  string
	}{
		{"published token", func(*testing.T, string) {}, TokenFile, "inside-token"},
		{"published jwks", func(*testing.T, string) {}, JWKSFile, `{"keys":[]}`},
		{"through ..data", func(*testing.T, string) {}, "..data/token", "inside-token"},
		{"link climbing back down", func(t *testing.T, dir string) {
			must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
			symlink(t, "../..data/token", filepath.Join(dir, "sub", "link"))
		}, "sub/link", "inside-token"},
		{"chain of relative links", func(t *testing.T, dir string) {
			symlink(t, "b", filepath.Join(dir, "a"))
			symlink(t, "./token", filepath.Join(dir, "b"))
		}, "a", "inside-token"},
		{"file of exactly MaxFileSize", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "big"), strings.Repeat("x", MaxFileSize))
		}, "big", strings.Repeat("x", MaxFileSize)},
		{"empty file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "empty"), "")
		}, "empty", ""},
	}
	for _, op := range openers {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				dir, _ := readTestDir(t)
				tt.setup(t, dir)
				got, err := readFile(dir, tt.read, op.open)
				if err != nil || string(got) != tt.want {
					t.Fatalf("read %s = %.40q, %v; want %.40q", tt.read, got, err, tt.want)
				}
			})
		}
	}
}

func TestReadFileRefusesWhatIsNotATokenInsideTheDirectory(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir, outside string)
		read    string
		wantErr error  // checked with errors.Is
		wantMsg string // the message after "read <name> <dir>/<name>: "
	}{
		{"token linked to an absolute path outside", func(t *testing.T, dir, outside string) {
			replaceLink(t, filepath.Join(outside, "token"), filepath.Join(dir, "token"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"token linked to a relative path outside", func(t *testing.T, dir, outside string) {
			replaceLink(t, "../outside/token", filepath.Join(dir, "token"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"token linked to an absolute path inside", func(t *testing.T, dir, outside string) {
			replaceLink(t, filepath.Join(dir, "..data", "token"), filepath.Join(dir, "token"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"..data pointing outside", func(t *testing.T, dir, outside string) {
			replaceLink(t, outside, filepath.Join(dir, "..data"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"..data leaving and re-entering", func(t *testing.T, dir, outside string) {
			gen, _ := os.Readlink(filepath.Join(dir, "..data"))
			replaceLink(t, "../auth/"+gen, filepath.Join(dir, "..data"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"link through /proc/self/root", func(t *testing.T, dir, outside string) {
			replaceLink(t, "/proc/self/root/"+outside+"/token", filepath.Join(dir, "token"))
		}, TokenFile, ErrOutsideDir, "symlink resolves outside {dir}"},
		{"oversized file", func(t *testing.T, dir, outside string) {
			replaceFile(t, filepath.Join(dir, "token"), strings.Repeat("x", MaxFileSize+1))
		}, TokenFile, ErrTooLarge, "file exceeds the size limit of 65536 bytes"},
		{"much larger file", func(t *testing.T, dir, outside string) {
			replaceFile(t, filepath.Join(dir, "token"), strings.Repeat("x", 10*MaxFileSize))
		}, TokenFile, ErrTooLarge, "file exceeds the size limit of 65536 bytes"},
		{"fifo", func(t *testing.T, dir, outside string) {
			must(t, os.Remove(filepath.Join(dir, "token")))
			mkfifo(t, filepath.Join(dir, "token"))
		}, TokenFile, ErrNotRegular, "not a regular file (named pipe)"},
		{"fifo behind ..data", func(t *testing.T, dir, outside string) {
			must(t, os.Mkdir(filepath.Join(dir, "..evil"), 0o700))
			mkfifo(t, filepath.Join(dir, "..evil", "token"))
			replaceLink(t, "..evil", filepath.Join(dir, "..data"))
		}, TokenFile, ErrNotRegular, "not a regular file (named pipe)"},
		{"character device", func(t *testing.T, dir, outside string) {
			must(t, os.Remove(filepath.Join(dir, "token")))
			if err := unix.Mknod(filepath.Join(dir, "token"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Skipf("mknod /dev/null twin: %v", err)
			}
		}, TokenFile, ErrNotRegular, "not a regular file (character device)"},
		{"directory", func(t *testing.T, dir, outside string) {
			must(t, os.Remove(filepath.Join(dir, "token")))
			must(t, os.Mkdir(filepath.Join(dir, "token"), 0o700))
		}, TokenFile, ErrNotRegular, "not a regular file (directory)"},
		{"missing file", func(t *testing.T, dir, outside string) {
			must(t, os.Remove(filepath.Join(dir, "token")))
		}, TokenFile, fs.ErrNotExist, "no such file or directory"},
		{"dangling ..data", func(t *testing.T, dir, outside string) {
			replaceLink(t, "..gone", filepath.Join(dir, "..data"))
		}, TokenFile, fs.ErrNotExist, "no such file or directory"},
		{"symlink loop", func(t *testing.T, dir, outside string) {
			replaceLink(t, "token", filepath.Join(dir, "token"))
		}, TokenFile, syscall.ELOOP, "too many levels of symbolic links"},
		{"file where a directory is needed", func(t *testing.T, dir, outside string) {
			gen, _ := os.Readlink(filepath.Join(dir, "..data"))
			replaceLink(t, gen+"/jwks.json", filepath.Join(dir, "..data"))
		}, TokenFile, syscall.ENOTDIR, "not a directory"},
		{"trailing slash on a file", func(t *testing.T, dir, outside string) {
			replaceLink(t, "..data/token/", filepath.Join(dir, "token"))
		}, TokenFile, syscall.ENOTDIR, "not a directory"},
		{"directory replaced by a file", func(t *testing.T, dir, outside string) {
			must(t, os.RemoveAll(dir))
			writeFile(t, dir, "x")
		}, TokenFile, syscall.ENOTDIR, "open directory {dir}: not a directory"},
		{"directory missing", func(t *testing.T, dir, outside string) {
			must(t, os.RemoveAll(dir))
		}, TokenFile, fs.ErrNotExist, "open directory {dir}: no such file or directory"},
		{"name climbing out", func(t *testing.T, dir, outside string) {}, "../outside/token", nil,
			"name is not a clean relative path inside the directory"},
		{"absolute name", func(t *testing.T, dir, outside string) {}, filepath.Join("/", "etc", "passwd"), nil,
			"name is not a clean relative path inside the directory"},
		{"unclean name", func(t *testing.T, dir, outside string) {}, "..data/../token", nil,
			"name is not a clean relative path inside the directory"},
	}
	for _, op := range openers {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				dir, outside := readTestDir(t)
				tt.setup(t, dir, outside)
				done := make(chan struct{})
				var got []byte
				var err error
				go func() {
					defer close(done)
					got, err = readFile(dir, tt.read, op.open)
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("read blocked")
				}
				if err == nil {
					t.Fatalf("read %s = %q, want an error", tt.read, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v is not %v", err, tt.wantErr)
				}
				want := fmt.Sprintf("read %s %s: %s", tt.read, filepath.Join(dir, tt.read),
					strings.ReplaceAll(tt.wantMsg, "{dir}", dir))
				if err.Error() != want {
					t.Errorf("error\n got %q\nwant %q", err, want)
				}
			})
		}
	}
}

func TestReadFileRetriesALookupRacingAWrite(t *testing.T) {
	tests := []struct {
		name      string
		failures  int
		errno     syscall.Errno
		wantCalls int
		wantErr   error
	}{
		{"ENOENT once", 1, unix.ENOENT, 2, nil},
		{"EAGAIN (openat2 racing a rename) twice", 2, unix.EAGAIN, 3, nil},
		{"ENOENT for good", 100, unix.ENOENT, readAttempts, fs.ErrNotExist},
		{"other errors are not retried", 100, unix.EACCES, 1, fs.ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := readTestDir(t)
			calls := 0
			racing := func(dirfd int, name string) (int, error) {
				if calls++; calls <= tt.failures {
					return -1, tt.errno
				}
				return openBeneath(dirfd, name)
			}
			got, err := readFile(dir, TokenFile, racing)
			if calls != tt.wantCalls {
				t.Errorf("%d open calls, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr == nil && (err != nil || string(got) != "inside-token") {
				t.Errorf("read = %q, %v; want the token", got, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("read error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A directory that does not exist, or holds no entry of the name, is not
// a lookup racing a Write (which never removes the entry itself): the
// read fails at once with fs.ErrNotExist instead of sleeping through its
// retries, so a reconcile over thousands of directories a reboot emptied
// costs reads, not sleeps.
func TestReadFileDoesNotRetryWhatIsAbsent(t *testing.T) {
	calls := 0
	counting := func(dirfd int, name string) (int, error) {
		calls++
		return openBeneath(dirfd, name)
	}
	dir := t.TempDir()
	if _, err := readFile(dir, TokenFile, counting); !errors.Is(err, fs.ErrNotExist) || calls != 1 {
		t.Errorf("directory without a token entry: %d open calls, error %v; want 1 call and fs.ErrNotExist", calls, err)
	}
	calls = 0
	missing := filepath.Join(dir, "never-made")
	_, err := readFile(missing, TokenFile, counting)
	var absent *absentError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &absent) || calls != 0 {
		t.Errorf("missing directory: %d open calls, error %v; want no call and a final fs.ErrNotExist", calls, err)
	}
}

func TestReadTokenReadsWhatWasWritten(t *testing.T) {
	w := newTestWriter(t)
	for i := range 3 {
		want := []byte(fmt.Sprint("token-", i))
		if err := w.Write(map[string][]byte{TokenFile: want}); err != nil {
			t.Fatal(err)
		}
		got, err := ReadToken(w.Dir())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ReadToken = %q, %v; want %q", got, err, want)
		}
	}
}

func replaceLink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	symlink(t, target, path)
}

// replaceFile makes path a regular file, even where it was a link.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.Remove(path))
	writeFile(t, path, content)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
