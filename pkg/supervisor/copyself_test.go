package supervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopySelfWritesTheRunningBinaryReadOnlyExecutable pins that CopySelf
// leaves dest an exact copy of the running binary with mode 0555 and no
// temporary file beside it.
func TestCopySelfWritesTheRunningBinaryReadOnlyExecutable(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "supervisor")
	if err := CopySelf(dest); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dest)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the running binary (%d bytes, want %d): %v", len(got), len(want), err)
	}
	if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o555 {
		t.Errorf("mode %v, want 0555", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the copy alone", len(entries))
	}
}

// TestCopySelfIntoAMissingDirectoryNamesIt pins the error of a bad DEST.
func TestCopySelfIntoAMissingDirectoryNamesIt(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "absent", "supervisor")
	err := CopySelf(dest)
	if err == nil || !strings.Contains(err.Error(), dest) {
		t.Fatalf("CopySelf(%s) = %v, want an error naming it", dest, err)
	}
}
