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

var testTime = time.Date(2026, 11, 27, 8, 15, 0, 123456789, time.UTC)

func payload(token string) map[string][]byte {
	return map[string][]byte{TokenFile: []byte(token), JWKSFile: []byte(`{"keys":[]}`)}
}

func newTestWriter(t testing.TB, opts ...Option) *Writer {
	t.Helper()
	w, err := NewWriter(filepath.Join(t.TempDir(), "sandboxes", "sb1", "auth"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWriteCreatesAtomicWriterLayout(t *testing.T) {
	old := unix.Umask(0o077) // modes must not depend on the umask
	defer unix.Umask(old)
	w := newTestWriter(t, WithClock(func() time.Time { return testTime.In(time.FixedZone("X", 3600)) }))
	if err := w.Write(payload("tok-1")); err != nil {
		t.Fatal(err)
	}
	current := checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	if want := "..2026_11_27_08_15_00.123456789"; current != want {
		t.Errorf("generation %q, want %q (UTC, nanoseconds)", current, want)
	}
	for name, want := range payload("tok-1") {
		got, err := os.ReadFile(filepath.Join(w.Dir(), current, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
	got, err := ReadToken(w.Dir())
	if err != nil || string(got) != "tok-1" {
		t.Errorf("ReadToken = %q, %v", got, err)
	}
}

func TestWriteKeepsOnlyCurrentAndPreviousGenerations(t *testing.T) {
	w := newTestWriter(t)
	var previous string
	for i := range 6 {
		if err := w.Write(payload(fmt.Sprint("tok-", i))); err != nil {
			t.Fatal(err)
		}
		current := checkLayout(t, w.Dir(), TokenFile, JWKSFile)
		gens := generations(t, w.Dir())
		want := []string{current}
		if previous != "" {
			want = []string{previous, current}
		}
		if fmt.Sprint(gens) != fmt.Sprint(want) {
			t.Fatalf("write %d: generations %v, want %v", i, gens, want)
		}
		if previous != "" {
			got, _ := os.ReadFile(filepath.Join(w.Dir(), previous, TokenFile))
			if string(got) != fmt.Sprint("tok-", i-1) {
				t.Errorf("previous generation holds %q, want tok-%d", got, i-1)
			}
		}
		previous = current
	}
}

func generations(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, e := range entries {
		if generationName.MatchString(e.Name()) {
			gens = append(gens, e.Name())
		}
	}
	return gens
}

func TestWriteNamesGenerationsUniquelyAndInOrderWhateverTheClock(t *testing.T) {
	tests := []struct {
		name  string
		times []time.Time
		want  []string
	}{
		{
			name:  "frozen clock",
			times: []time.Time{testTime, testTime, testTime},
			want: []string{"..2026_11_27_08_15_00.123456789", "..2026_11_27_08_15_00.123456790",
				"..2026_11_27_08_15_00.123456791"},
		},
		{
			name:  "clock stepping back",
			times: []time.Time{testTime, testTime.Add(-time.Hour)},
			want:  []string{"..2026_11_27_08_15_00.123456789", "..2026_11_27_08_15_00.123456790"},
		},
		{
			name:  "clock moving on",
			times: []time.Time{testTime, testTime.Add(time.Second)},
			want:  []string{"..2026_11_27_08_15_00.123456789", "..2026_11_27_08_15_01.123456789"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := 0
			w := newTestWriter(t, WithClock(func() time.Time { return tt.times[i] }))
			for i = range tt.times {
				if err := w.Write(payload("t")); err != nil {
					t.Fatal(err)
				}
				current, _ := os.Readlink(filepath.Join(w.Dir(), dataLink))
				if current != tt.want[i] {
					t.Errorf("write %d: generation %q, want %q", i, current, tt.want[i])
				}
			}
		})
	}
}

func TestNewWriterCreatesMissingDirectory0700(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	dir := filepath.Join(t.TempDir(), "a", "b", "auth")
	if _, err := NewWriter(dir); err != nil {
		t.Fatal(err)
	}
	mode(t, dir, 0o700)
	// An existing directory is accepted as it is.
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(dir); err != nil {
		t.Fatal(err)
	}
	mode(t, dir, 0o750)
}

func TestNewWriterRefusesSymlinkOrNonDirectory(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"regular file", func(t *testing.T, path string) { writeFile(t, path, "x") }, "is not a directory (regular file)"},
		{"symlink to a directory", func(t *testing.T, path string) { symlink(t, t.TempDir(), path) }, "is a symlink"},
		{"dangling symlink", func(t *testing.T, path string) { symlink(t, "/nonexistent", path) }, "is a symlink"},
		{"fifo", func(t *testing.T, path string) { mkfifo(t, path) }, "is not a directory (named pipe)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "auth")
			tt.setup(t, path)
			_, err := NewWriter(path)
			if err == nil || !strings.Contains(err.Error(), "token dir "+path+": "+tt.want) {
				t.Fatalf("NewWriter(%s) error = %v, want %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestWriteRefusesBadPayload(t *testing.T) {
	tests := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"empty", nil, "no files to write"},
		{"empty name", map[string][]byte{"": nil}, "empty file name"},
		{"dot name", map[string][]byte{"..data": nil}, "starts with a dot"},
		{"parent", map[string][]byte{"../x": nil}, "starts with a dot"},
		{"nested", map[string][]byte{"a/b": nil}, "not a plain name"},
		{"too large", map[string][]byte{TokenFile: make([]byte, MaxFileSize+1)}, "65537 bytes, more than the 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newTestWriter(t)
			err := w.Write(tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write error = %v, want %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(w.Dir()); len(entries) != 0 {
				t.Errorf("a refused Write left %d entries", len(entries))
			}
		})
	}
}

func TestWriteRemovesLinkOfFileNoLongerWritten(t *testing.T) {
	w := newTestWriter(t)
	if err := w.Write(payload("t1")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(map[string][]byte{TokenFile: []byte("t2")}); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, w.Dir(), TokenFile)
	if _, err := os.Lstat(filepath.Join(w.Dir(), JWKSFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("jwks.json still there after a Write without it: %v", err)
	}
}

func TestWriteRepairsLeftoversOfACrashedWrite(t *testing.T) {
	w := newTestWriter(t)
	dir := w.Dir()
	if err := w.Write(payload("t1")); err != nil {
		t.Fatal(err)
	}
	// A crash between steps leaves temporary links, an unpublished
	// generation, and maybe a visible name that is not a link.
	symlink(t, "..2000_01_01_00_00_00.000000000", filepath.Join(dir, dataTmpLink))
	symlink(t, "..data/nothing", filepath.Join(dir, linkTmp))
	orphan := filepath.Join(dir, "..2099_01_01_00_00_00.000000000")
	if err := os.Mkdir(orphan, 0o500); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, JWKSFile))
	if err := os.Remove(filepath.Join(dir, TokenFile)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, TokenFile), "stale")

	if err := w.Write(payload("t2")); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dir, TokenFile, JWKSFile)
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan generation survived: %v", err)
	}
	if got, err := ReadToken(dir); err != nil || string(got) != "t2" {
		t.Errorf("ReadToken = %q, %v; want t2", got, err)
	}
}

func TestWriteFailsWhenDirectoryWasReplaced(t *testing.T) {
	tests := []struct {
		name    string
		replace func(t *testing.T, dir string)
		want    string
	}{
		{"by a file", func(t *testing.T, dir string) { writeFile(t, dir, "x") }, "is not a directory"},
		{"by a symlink", func(t *testing.T, dir string) { symlink(t, t.TempDir(), dir) }, "is a symlink"},
		{"by nothing", func(t *testing.T, dir string) {}, "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newTestWriter(t)
			if err := w.Write(payload("t1")); err != nil {
				t.Fatal(err)
			}
			if err := w.Remove(); err != nil {
				t.Fatal(err)
			}
			tt.replace(t, w.Dir())
			err := w.Write(payload("t2"))
			if err == nil || !strings.Contains(err.Error(), "write token dir "+w.Dir()) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRemoveDeletesDirectoryAndIsIdempotent(t *testing.T) {
	w := newTestWriter(t)
	for i := range 3 {
		if err := w.Write(payload(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(w.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("directory still there after Remove: %v", err)
	}
	if err := w.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestWithOwnerChownsDirectoryGenerationsAndFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another uid needs root")
	}
	const uid, gid = 12345, 23456
	w := newTestWriter(t, WithOwner(uid, gid))
	if err := w.Write(payload("t")); err != nil {
		t.Fatal(err)
	}
	current := checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	for _, p := range []string{"", current, current + "/" + TokenFile, current + "/" + JWKSFile} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(w.Dir(), p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
}

func TestWriteWaitsForFlockHeldByAnotherOpenFile(t *testing.T) {
	w := newTestWriter(t)
	// flock locks belong to an open file description: one opened here
	// excludes the Writer exactly as another process's would.
	f, err := os.Open(w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Write(payload("t")) }()
	select {
	case err := <-done:
		t.Fatalf("Write finished (%v) while another holder had the lock", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := os.Lstat(filepath.Join(w.Dir(), dataLink)); err == nil {
		t.Fatal("Write published while another holder had the lock")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}
