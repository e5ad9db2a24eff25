package initramfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sample writes one entry of every kind.
func sample(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Dir("/etc", 0o755)
	w.Dir("etc/sandkey", 0o700)
	w.Dir("tmp", 0o777|fs.ModeSticky)
	w.File("etc/sandkey/boot.json", 0o600, []byte(`{"args":["--","sh"]}`))
	w.File("empty", 0o644, nil)
	w.Symlink("bin/sh", "busybox")
	w.CharDevice("dev/console", 0o600, 5, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// requireCpio finds the reference cpio, which scripts/vm-deps.sh installs;
// under CI it must be there.
func requireCpio(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cpio")
	if err == nil {
		return p
	}
	testmain.SkipIfMissing(t, errors.New("cpio is missing: scripts/vm-deps.sh installs it"), true)
	return ""
}

func TestArchiveListsInGNUCpioWithModesAndLinks(t *testing.T) {
	cpio := requireCpio(t)
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(sample(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v\n%s", err, out)
	}
	want := []struct{ mode, name string }{
		{"drwxr-xr-x", "etc"},
		{"drwx------", "etc/sandkey"},
		{"drwxrwxrwt", "tmp"},
		{"-rw-------", "etc/sandkey/boot.json"},
		{"-rw-r--r--", "empty"},
		{"lrwxrwxrwx", "bin/sh -> busybox"},
		{"crw-------", "dev/console"},
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("cpio lists %d entries, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w.mode) || !strings.HasSuffix(lines[i], " "+w.name) {
			t.Errorf("entry %d: %q, want mode %s and name %q", i, lines[i], w.mode, w.name)
		}
	}
}

func TestArchiveExtractsFileContents(t *testing.T) {
	cpio := requireCpio(t)
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-id", "--quiet", "--no-absolute-filenames", "etc/*", "bin/*")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(sample(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "etc/sandkey/boot.json"))
	if err != nil || string(got) != `{"args":["--","sh"]}` {
		t.Errorf("boot.json = %q, %v", got, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v; want busybox", target, err)
	}
}

func TestArchiveIsDeterministicAndAligned(t *testing.T) {
	a, b := sample(t), sample(t)
	if !bytes.Equal(a, b) {
		t.Fatal("two archives of the same entries differ")
	}
	if len(a)%4 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 4", len(a))
	}
	if !bytes.HasPrefix(a, []byte(magic)) || !bytes.Contains(a, []byte(trailer+"\x00")) {
		t.Error("archive lacks the newc magic or the trailer")
	}
}

func TestPaddingAlignsTheNextArchive(t *testing.T) {
	for size, want := range map[int64]int{0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 4097: 3} {
		if got := len(Padding(size)); got != want {
			t.Errorf("Padding(%d) is %d bytes, want %d", size, got, want)
		}
	}
}

func TestWriterRefusesBadNamesAndKeepsTheFirstError(t *testing.T) {
	for _, name := range []string{"", "/", ".", "..", "TRAILER!!!", "a\x00b", strings.Repeat("x", maxName+1)} {
		w := NewWriter(&bytes.Buffer{})
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("File(%.20q) succeeded", name)
		}
		if err := w.Close(); err == nil {
			t.Errorf("Close after File(%.20q) failed nothing", name)
		}
	}
	w := NewWriter(&bytes.Buffer{})
	if err := w.Symlink("x", ""); err == nil {
		t.Error("Symlink with empty target succeeded")
	}
}

func TestWriterNamesAreRelativeAndClean(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.File("/a/../b//c", 0o644, []byte("x"))
	w.Close()
	if !bytes.Contains(buf.Bytes(), []byte("b/c\x00")) || bytes.Contains(buf.Bytes(), []byte("/b/c")) {
		t.Errorf("entry name not stored as b/c: %q", buf.Bytes()[:120])
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriterReportsTheUnderlyingWriteError(t *testing.T) {
	w := NewWriter(&failingWriter{n: 200})
	w.File("a", 0o644, bytes.Repeat([]byte("x"), 500))
	w.File("b", 0o644, nil)
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close = %v, want the write error", err)
	}
}
