package statedir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type record struct {
	Name string `json:"name"`
	Gen  int    `json:"gen"`
}

func TestWriteJSONReplacesRecordWholeAndPrivately(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.json")
	for gen := 1; gen <= 2; gen++ {
		if err := WriteJSON(path, record{Name: "a", Gen: gen}); err != nil {
			t.Fatal(err)
		}
		var got record
		if err := ReadJSON(path, &got); err != nil || got != (record{Name: "a", Gen: gen}) {
			t.Fatalf("ReadJSON = %+v, %v; want gen %d", got, err, gen)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the record (no temporary file left)", len(entries))
	}
}

func TestReadJSONErrors(t *testing.T) {
	dir := t.TempDir()
	var r record
	if err := ReadJSON(filepath.Join(dir, "missing"), &r); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadJSON of a missing file = %v, want fs.ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("{"), 0o600)
	if err := ReadJSON(bad, &r); err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), bad) {
		t.Errorf("ReadJSON of a torn file = %v, want a decode error naming %s", err, bad)
	}
}

func TestWriteJSONIntoMissingDirectoryFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "rec.json")
	if err := WriteJSON(path, record{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteJSON = %v, want an error naming %s", err, path)
	}
}

func TestMakePrivateTightensExistingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MakePrivate(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode after MakePrivate = %v (%v), want 0700", fi.Mode().Perm(), err)
	}
}

func TestIndexFindsLinkedStateDirectory(t *testing.T) {
	root := t.TempDir()
	x, err := OpenIndex(root)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, IndexDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("index directory: %v, %v; want a 0700 directory", fi, err)
	}
	if _, err := x.Lookup("sb"); !errors.Is(err, ErrNoState) {
		t.Fatalf("Lookup of an unknown sandbox = %v, want ErrNoState", err)
	}

	first, second := filepath.Join(root, "first"), filepath.Join(root, "second")
	for _, dir := range []string{first, second} {
		if err := MakePrivate(dir); err != nil {
			t.Fatal(err)
		}
		if err := x.Link("sb", dir); err != nil {
			t.Fatal(err)
		}
		if got, err := x.Lookup("sb"); err != nil || got != dir {
			t.Fatalf("Lookup = %q, %v; want %q", got, err, dir)
		}
	}
	if err := x.Link("sb", second); err != nil {
		t.Fatalf("relinking to the same directory = %v", err)
	}

	if err := os.Remove(second); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Lookup("sb"); !errors.Is(err, ErrNoState) {
		t.Errorf("Lookup of an entry whose directory is gone = %v, want ErrNoState", err)
	}
	if err := x.Unlink("sb"); err != nil {
		t.Fatal(err)
	}
	if err := x.Unlink("sb"); err != nil {
		t.Errorf("Unlink of a missing entry = %v, want nil", err)
	}
	if _, err := os.Lstat(x.Path("sb")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("entry after Unlink: %v, want gone", err)
	}
}

func TestIndexPathServesAsStateDirectory(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := x.Path("sb")
	if err := MakePrivate(dir); err != nil {
		t.Fatal(err)
	}
	if err := x.Link("sb", dir); err != nil {
		t.Fatal(err)
	}
	if got, err := x.Lookup("sb"); err != nil || got != dir {
		t.Errorf("Lookup = %q, %v; want the index path %q itself", got, err, dir)
	}
}

func TestLookupRejectsEntryThatIsNoDirectory(t *testing.T) {
	root := t.TempDir()
	x, err := OpenIndex(root)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	if err := x.Link("sb", file); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Lookup("sb"); err == nil || errors.Is(err, ErrNoState) {
		t.Errorf("Lookup of an entry pointing at a file = %v, want an error other than ErrNoState", err)
	}
}

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"sb-1", true},
		{strings.Repeat("a", 200), true},
		{"", false},
		{".hidden", false},
		{"a/b", false},
		{"a\x00b", false},
		{strings.Repeat("a", 201), false},
	} {
		if err := CheckID(tc.id); (err == nil) != tc.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestNormalize(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := driver.Spec{SandboxID: "sb", TokenDir: "/t/./tok/", SocketDir: "/s//sock"}
	got, err := x.Normalize(base)
	if err != nil {
		t.Fatal(err)
	}
	if got.StateDir != x.Path("sb") || got.TokenDir != "/t/tok" || got.SocketDir != "/s/sock" {
		t.Errorf("Normalize = state %q token %q socket %q; want the index path and clean paths", got.StateDir, got.TokenDir, got.SocketDir)
	}
	for name, spec := range map[string]driver.Spec{
		"bad id":             {SandboxID: "a/b", TokenDir: "/t", SocketDir: "/s"},
		"relative state dir": {SandboxID: "sb", StateDir: "st", TokenDir: "/t", SocketDir: "/s"},
		"relative token dir": {SandboxID: "sb", TokenDir: "t", SocketDir: "/s"},
		"empty socket dir":   {SandboxID: "sb", TokenDir: "/t"},
	} {
		if _, err := x.Normalize(spec); err == nil {
			t.Errorf("%s: Normalize = nil, want an error", name)
		}
	}
}
