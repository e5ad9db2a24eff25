package tokendir

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var generationName = regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}$`)

// checkLayout fails t unless dir has the published layout of the package
// doc for the given visible names, with at most two generations and no
// leftovers, and returns the current generation's name.
func checkLayout(t testing.TB, dir string, names ...string) string {
	t.Helper()
	mode(t, dir, 0o700)
	current, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		t.Fatalf("..data: %v", err)
	}
	if !generationName.MatchString(current) {
		t.Fatalf("..data -> %q, want a generation name", current)
	}
	mode(t, filepath.Join(dir, current), 0o500)
	for _, name := range names {
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || target != "..data/"+name {
			t.Fatalf("%s -> %q (%v), want ..data/%s", name, target, err, name)
		}
		mode(t, filepath.Join(dir, current, name), 0o400)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	generations := 0
	for _, e := range entries {
		switch name := e.Name(); {
		case name == dataLink:
		case generationName.MatchString(name) && e.IsDir():
			generations++
		case slices.Contains(names, name):
		default:
			t.Errorf("unexpected entry %s (%s) in %s", name, e.Type(), dir)
		}
	}
	if generations < 1 || generations > 2 {
		t.Errorf("%d generations in %s, want 1 or 2", generations, dir)
	}
	return current
}

func mode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o, want %#o", path, got, want)
	}
}
