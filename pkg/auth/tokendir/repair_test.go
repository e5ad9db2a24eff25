package tokendir

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// outsideDir makes a directory beside the token directory, with a file
// and a read-only subdirectory, that a hostile state points at.
func outsideDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outside")
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	writeFile(t, filepath.Join(dir, "secret"), "outside")
	writeFile(t, filepath.Join(dir, "sub", "file"), "outside")
	must(t, os.Chmod(filepath.Join(dir, "sub"), 0o500))
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "sub"), 0o700) })
	return dir
}

// checkOutsideUntouched fails t if anything of outsideDir changed.
func checkOutsideUntouched(t *testing.T, dir string) {
	t.Helper()
	for _, p := range []string{"secret", "sub/file"} {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(got) != "outside" {
			t.Errorf("outside file %s = %q (%v): the writer reached outside its directory", p, got, err)
		}
	}
	mode(t, dir, 0o755)
	mode(t, filepath.Join(dir, "sub"), 0o500)
	mode(t, filepath.Join(dir, "secret"), 0o600)
}

// hostileTree makes a non-empty directory at path with a read-only
// directory inside, so that removing it needs more than one rmdir.
func hostileTree(t *testing.T, path string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(path, "deep", "deeper"), 0o700))
	writeFile(t, filepath.Join(path, "token"), "planted")
	writeFile(t, filepath.Join(path, "deep", "deeper", "f"), "planted")
	must(t, os.Chmod(filepath.Join(path, "deep", "deeper"), 0o500))
	must(t, os.Chmod(filepath.Join(path, "deep"), 0o500))
	must(t, os.Chmod(path, 0o500))
}

// replaceWith removes path (a link or a generation) and runs make there.
func replaceWith(t *testing.T, path string, make func(t *testing.T, path string)) {
	t.Helper()
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		must(t, os.Chmod(path, 0o700))
	}
	must(t, os.RemoveAll(path))
	make(t, path)
}

// TestWriteRepairsAnyStateOfItsDirectory pins issue 12's hostile states: a
// sandbox that can write its own token directory (the process driver, as
// the gateway's user) leaves it in a state no Write made, and the next
// Write publishes a good layout anyway, without touching anything outside.
func TestWriteRepairsAnyStateOfItsDirectory(t *testing.T) {
	tests := []struct {
		name   string
		plant  func(t *testing.T, dir, current, outside string)
		extras []string // visible names the payload of the repairing write has beyond token and jwks.json
	}{
		{"token is a real directory", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, TokenFile), hostileTree)
		}, nil},
		{"token is a regular file", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, TokenFile), func(t *testing.T, p string) { writeFile(t, p, "planted") })
		}, nil},
		{"token is a symlink outside", func(t *testing.T, dir, _, outside string) {
			replaceWith(t, filepath.Join(dir, TokenFile), func(t *testing.T, p string) { symlink(t, filepath.Join(outside, "secret"), p) })
		}, nil},
		{"token is a FIFO", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, TokenFile), mkfifo)
		}, nil},
		{"jwks.json is a real directory", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, JWKSFile), hostileTree)
		}, nil},
		{"..data is a real directory", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, dataLink), hostileTree)
		}, nil},
		{"..data is a regular file", func(t *testing.T, dir, _, _ string) {
			replaceWith(t, filepath.Join(dir, dataLink), func(t *testing.T, p string) { writeFile(t, p, "x") })
		}, nil},
		{"..data points outside", func(t *testing.T, dir, _, outside string) {
			replaceWith(t, filepath.Join(dir, dataLink), func(t *testing.T, p string) { symlink(t, outside, p) })
		}, nil},
		{"..data is missing", func(t *testing.T, dir, _, _ string) {
			must(t, os.Remove(filepath.Join(dir, dataLink)))
		}, nil},
		{"current generation is a symlink outside", func(t *testing.T, dir, current, outside string) {
			replaceWith(t, filepath.Join(dir, current), func(t *testing.T, p string) { symlink(t, outside, p) })
		}, nil},
		{"current generation is a regular file", func(t *testing.T, dir, current, _ string) {
			replaceWith(t, filepath.Join(dir, current), func(t *testing.T, p string) { writeFile(t, p, "x") })
		}, nil},
		{"old generation holds a deep read-only tree", func(t *testing.T, dir, _, _ string) {
			hostileTree(t, filepath.Join(dir, "..2000_01_01_00_00_00.000000000"))
		}, nil},
		{"previous generation holds planted entries", func(t *testing.T, dir, current, outside string) {
			// Inside a generation: the directory's own stat does not change.
			prev := filepath.Join(dir, otherGeneration(t, dir, current))
			must(t, os.Chmod(prev, 0o700))
			writeFile(t, filepath.Join(prev, "planted"), "x")
			symlink(t, outside, filepath.Join(prev, "link-outside"))
			hostileTree(t, filepath.Join(prev, "tree"))
			must(t, os.Chmod(prev, 0o500))
		}, nil},
		{"temporary links are real directories", func(t *testing.T, dir, _, _ string) {
			hostileTree(t, filepath.Join(dir, dataTmpLink))
			hostileTree(t, filepath.Join(dir, linkTmp))
		}, nil},
		{"stray entries of every kind", func(t *testing.T, dir, _, outside string) {
			writeFile(t, filepath.Join(dir, "stray-file"), "x")
			symlink(t, outside, filepath.Join(dir, "stray-link"))
			symlink(t, outside, filepath.Join(dir, ".stray-dot-link"))
			hostileTree(t, filepath.Join(dir, "stray-dir"))
			hostileTree(t, filepath.Join(dir, "..not-a-generation"))
			mkfifo(t, filepath.Join(dir, "stray-fifo"))
		}, nil},
		{"payload name is planted before the write that adds it", func(t *testing.T, dir, _, _ string) {
			hostileTree(t, filepath.Join(dir, "extra"))
		}, []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := outsideDir(t)
			w := newTestWriter(t)
			dir := w.Dir()
			for _, tok := range []string{"t1", "t2"} { // two generations, as in steady state
				must(t, w.Write(payload(tok)))
			}
			current, err := os.Readlink(filepath.Join(dir, dataLink))
			must(t, err)
			tt.plant(t, dir, current, outside)

			files := payload("t3")
			for _, name := range tt.extras {
				files[name] = []byte("e")
			}
			if err := w.Write(files); err != nil {
				t.Fatalf("Write after the hostile state: %v", err)
			}
			names := append([]string{TokenFile, JWKSFile}, tt.extras...)
			checkLayout(t, dir, names...)
			if got, err := ReadToken(dir); err != nil || string(got) != "t3" {
				t.Errorf("ReadToken = %q, %v; want t3", got, err)
			}
			// And the state stays repaired: the next write keeps the layout.
			must(t, w.Write(files))
			checkLayout(t, dir, names...)
			checkOutsideUntouched(t, outside)
		})
	}
}

// TestWriteLinksUnchangedFileIntoNextGeneration pins the cheap path: a
// file whose content did not change since the Writer's last write (the
// JWKS between key rotations) is, from its second unchanged write on, the
// same inode in the next generation.
func TestWriteLinksUnchangedFileIntoNextGeneration(t *testing.T) {
	w := newTestWriter(t)
	must(t, w.Write(payload("t1")))
	must(t, w.Write(payload("t2"))) // unchanged once: written and stamped
	stamped := inode(t, filepath.Join(w.Dir(), JWKSFile))
	must(t, w.Write(payload("t2b")))
	if got := inode(t, filepath.Join(w.Dir(), JWKSFile)); got != stamped {
		t.Errorf("jwks.json inode %d after a write with the same JWKS, want %d (linked)", got, stamped)
	}
	files := payload("t3")
	files[JWKSFile] = []byte(`{"keys":[{"kid":"new"}]}`)
	must(t, w.Write(files))
	got, err := ReadFile(w.Dir(), JWKSFile)
	if err != nil || string(got) != `{"keys":[{"kid":"new"}]}` {
		t.Errorf("jwks.json = %q (%v) after the keys changed", got, err)
	}
}

// TestWriteNeverLinksAFileChangedSinceItsWrite pins that the cheap path
// never carries a tampered file forward: what the directory holds after a
// Write is what that Write was given.
func TestWriteNeverLinksAFileChangedSinceItsWrite(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, path string)
	}{
		{"rewritten in place", func(t *testing.T, p string) {
			must(t, os.Chmod(p, 0o600))
			writeFile(t, p, `{"keys":"planted"}`)
		}},
		{"replaced by another file", func(t *testing.T, p string) {
			must(t, os.Remove(p))
			writeFile(t, p, `{"keys":[]}`)
		}},
		{"made writable", func(t *testing.T, p string) {
			must(t, os.Chmod(p, 0o600))
		}},
		{"replaced by a symlink", func(t *testing.T, p string) {
			must(t, os.Remove(p))
			symlink(t, "token", p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newTestWriter(t)
			must(t, w.Write(payload("t1")))
			must(t, w.Write(payload("t1b"))) // the JWKS is stamped now
			current, err := os.Readlink(filepath.Join(w.Dir(), dataLink))
			must(t, err)
			gen := filepath.Join(w.Dir(), current)
			must(t, os.Chmod(gen, 0o700))
			tt.tamper(t, filepath.Join(gen, JWKSFile))
			must(t, os.Chmod(gen, 0o500))

			must(t, w.Write(payload("t2")))
			checkLayout(t, w.Dir(), TokenFile, JWKSFile) // checks the files' modes too
			got, err := ReadFile(w.Dir(), JWKSFile)
			if err != nil || string(got) != `{"keys":[]}` {
				t.Errorf("jwks.json = %q (%v), want the content the Write was given", got, err)
			}
			if inode(t, filepath.Join(w.Dir(), JWKSFile)) == inode(t, filepath.Join(gen, JWKSFile)) {
				t.Error("the tampered file was linked into the new generation")
			}
		})
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	return st.Ino
}

// otherGeneration returns the generation of dir that is not current.
func otherGeneration(t *testing.T, dir, current string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range entries {
		if name := e.Name(); name != current && generationName.MatchString(name) {
			return name
		}
	}
	t.Fatalf("no generation but %s in %s", current, dir)
	return ""
}
