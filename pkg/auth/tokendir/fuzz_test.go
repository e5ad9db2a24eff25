package tokendir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bytes that fill files: a read may only ever return insideByte.
const (
	insideByte  = 'i'
	outsideByte = 'o'
)

// fuzzNames are the components layouts are built from; ".." and "/" make
// escapes, "auth" re-enters the directory from its parent.
var fuzzNames = []string{"token", "..data", "..gen", "a", "b", "jwks.json", "auth", "outside", ".", ".."}

// fuzzLayout builds a directory layout inside <top>/auth from data, beside
// <top>/outside, which holds files of outsideByte and links back in. Each
// step consumes bytes: an opcode, then its operands.
func fuzzLayout(t *testing.T, data []byte) (dir string) {
	top := t.TempDir()
	dir = filepath.Join(top, "auth")
	outside := filepath.Join(top, "outside")
	for _, d := range []string{dir, outside, filepath.Join(outside, "..data")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"token", "..data/token", "jwks.json"} {
		if err := os.WriteFile(filepath.Join(outside, f), []byte{outsideByte}, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	// path makes 1-2 components, none of them "." or "..", for creating.
	path := func() string {
		b := next()
		p := fuzzNames[int(b)%7]
		if b&0x80 != 0 {
			p += "/" + fuzzNames[int(next())%7]
		}
		return p
	}
	// target makes a symlink target of 1-4 components, relative or absolute,
	// pointing anywhere.
	target := func() string {
		b := next()
		var comps []string
		for range 1 + int(b)%4 {
			comps = append(comps, fuzzNames[int(next())%len(fuzzNames)])
		}
		t := strings.Join(comps, "/")
		switch b >> 6 {
		case 1:
			t = filepath.Join(top, t) // absolute
		case 2:
			t = "../" + t
		case 3:
			t += "/"
		}
		return t
	}
	for steps := 0; len(data) > 0 && steps < 16; steps++ {
		switch next() % 4 {
		case 0:
			os.MkdirAll(filepath.Join(dir, path()), 0o700)
		case 1:
			size := int(next()) * 300 // up to 76500: beyond MaxFileSize
			p := filepath.Join(dir, path())
			os.MkdirAll(filepath.Dir(p), 0o700)
			os.WriteFile(p, bytes.Repeat([]byte{insideByte}, size), 0o600)
		case 2, 3:
			p := filepath.Join(dir, path())
			os.MkdirAll(filepath.Dir(p), 0o700)
			os.Symlink(target(), p)
		}
	}
	return dir
}

func FuzzReadFile(f *testing.F) {
	// Seeds, decoded as fuzzLayout does (op: 0 mkdir, 1 file, 2|3 symlink).
	for _, seed := range [][]byte{
		// ..gen/token file; ..data -> ..gen; token -> ..data/token
		{1, 0x82, 0, 10, 2, 1, 0x00, 2, 2, 0, 0x01, 1, 0},
		{2, 0, 0x41, 7, 0},                   // token -> <top>/outside/token
		{2, 0, 0x81, 7, 0},                   // token -> ../outside/token
		{2, 1, 0x40, 7},                      // ..data -> <top>/outside
		{2, 1, 0x81, 6, 2},                   // ..data -> ../auth/..gen (leaves, re-enters)
		{2, 0, 0x02, 1, 9, 7},                // token -> ..data/../outside
		{1, 0, 219},                          // token of 65700 bytes
		{1, 0, 218},                          // token of 65400 bytes
		{2, 0, 0x00, 0},                      // token -> token
		{2, 0, 0xc0, 0},                      // token -> token/
		{0, 0x83, 0, 2, 0, 0x82, 3, 9, 9, 7}, // a/token; token -> a/../../outside
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := fuzzLayout(t, data)
		checkInside := func(how, name string, got []byte) {
			if len(got) > MaxFileSize {
				t.Fatalf("%s: read %s returned %d bytes, more than MaxFileSize", how, name, len(got))
			}
			if bytes.ContainsFunc(got, func(r rune) bool { return r != insideByte }) {
				t.Fatalf("%s: read %s returned content from outside the directory: %.20q", how, name, got)
			}
		}
		// The public path, retries included, on the token.
		if got, err := ReadToken(dir); err == nil {
			checkInside("ReadToken", TokenFile, got)
		}
		// Each resolver once per name (retries only slow fuzzing down), and
		// both must agree.
		for _, name := range []string{"token", "jwks.json", "..data/token", "a/b", "a"} {
			var results [2][]byte
			var errs [2]error
			for i, op := range openers {
				results[i], errs[i] = readOnce(dir, name, op.open)
				if errs[i] == nil {
					checkInside(op.name, name, results[i])
				}
			}
			if (errs[0] == nil) != (errs[1] == nil) || !bytes.Equal(results[0], results[1]) ||
				errors.Is(errs[0], ErrOutsideDir) != errors.Is(errs[1], ErrOutsideDir) {
				t.Fatalf("read %s: openat2 gave %d bytes, %v; by hand %d bytes, %v",
					name, len(results[0]), errs[0], len(results[1]), errs[1])
			}
		}
	})
}

// FuzzWrite: whatever a sandbox that can write its own token directory
// left there (fuzzLayout's files, directories and links, in and out), a
// Write publishes a good layout that reads back as written, and touches
// nothing outside the directory; so does the next Write, which may take
// the unlisted path (the directory unchanged since the first).
func FuzzWrite(f *testing.F) {
	for _, seed := range [][]byte{
		{1, 0x82, 0, 10, 2, 1, 0x00, 2, 2, 0, 0x01, 1, 0},
		{2, 0, 0x41, 7, 0},
		{2, 1, 0x40, 7},
		{2, 1, 0x81, 6, 2},
		{0, 0x83, 0, 2, 0, 0x82, 3, 9, 9, 7},
		{2, 2, 0x81, 7, 1, 0x82, 2, 5},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := fuzzLayout(t, data)
		outside := filepath.Join(filepath.Dir(dir), "outside")
		before := snapshot(t, outside)
		w, err := NewWriter(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ {
			want := fmt.Sprintf("tok-%d", i)
			if err := w.Write(payload(want)); err != nil {
				t.Fatalf("write %d over the planted layout: %v", i, err)
			}
			checkLayout(t, dir, TokenFile, JWKSFile)
			if got, err := ReadToken(dir); err != nil || string(got) != want {
				t.Fatalf("after write %d, ReadToken = %q, %v; want %q", i, got, err, want)
			}
		}
		if after := snapshot(t, outside); !maps.Equal(before, after) {
			t.Fatalf("the writes changed what is outside the directory:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// snapshot describes every entry under root without following a link:
// its type and mode, and a file's content or a link's target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(data)
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
