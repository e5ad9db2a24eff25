package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandkey/sandkey/pkg/driver"
)

// IndexDir is the directory under a driver's state root that maps sandbox
// IDs to state directories.
const IndexDir = "sandboxes"

// ErrNoState says a driver holds no state directory for a sandbox.
var ErrNoState = errors.New("no state directory")

// Index maps sandbox IDs to state directories (see the package doc).
type Index struct {
	dir string
}

// OpenIndex opens the index under stateRoot, creating it (0700) if needed.
func OpenIndex(stateRoot string) (*Index, error) {
	dir := filepath.Join(stateRoot, IndexDir)
	if err := MakePrivate(dir); err != nil {
		return nil, err
	}
	return &Index{dir: dir}, nil
}

// Path is where the index entry of sandbox id lives; it is also the state
// directory of a sandbox that names none of its own.
func (x *Index) Path(id string) string { return filepath.Join(x.dir, id) }

// Link points the index entry of id at stateDir, replacing an entry that
// points elsewhere. A state directory that is the index path itself needs
// no entry.
func (x *Index) Link(id, stateDir string) error {
	entry := x.Path(id)
	if entry == stateDir {
		return nil
	}
	if target, err := os.Readlink(entry); err == nil && target == stateDir {
		return nil
	}
	// Sandbox IDs never start with a dot, so tmp names no other sandbox.
	tmp := filepath.Join(x.dir, "."+id+".link")
	os.Remove(tmp)
	if err := os.Symlink(stateDir, tmp); err != nil {
		return fmt.Errorf("link %s -> %s: %w", tmp, stateDir, err)
	}
	if err := os.Rename(tmp, entry); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s -> %s: %w", entry, stateDir, err)
	}
	return nil
}

// Lookup finds the state directory of sandbox id. It returns ErrNoState
// when there is no index entry or no directory behind it.
func (x *Index) Lookup(id string) (string, error) {
	entry := x.Path(id)
	fi, err := os.Lstat(entry)
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNoState
	}
	if err != nil {
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	}
	dir := entry
	if fi.Mode()&fs.ModeSymlink != 0 {
		if dir, err = os.Readlink(entry); err != nil {
			return "", fmt.Errorf("look up sandbox %s: %w", id, err)
		}
	}
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return "", ErrNoState
	case err != nil:
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	case !fi.IsDir():
		return "", fmt.Errorf("look up sandbox %s: %s is not a directory", id, dir)
	}
	return dir, nil
}

// Unlink removes the index entry of id; a missing entry is not an error.
func (x *Index) Unlink(id string) error {
	if err := os.Remove(x.Path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Normalize checks spec's sandbox ID and paths, fills in its state
// directory with the index path when empty, and cleans the paths, which
// must be absolute: the sandbox's processes do not run in the gateway's
// working directory.
func (x *Index) Normalize(spec driver.Spec) (driver.Spec, error) {
	if err := CheckID(spec.SandboxID); err != nil {
		return spec, err
	}
	if spec.StateDir == "" {
		spec.StateDir = x.Path(spec.SandboxID)
	}
	for _, p := range []struct {
		name string
		path *string
	}{{"state directory", &spec.StateDir}, {"token directory", &spec.TokenDir}, {"socket directory", &spec.SocketDir}} {
		if !filepath.IsAbs(*p.path) {
			return spec, fmt.Errorf("%s %q is not an absolute path", p.name, *p.path)
		}
		*p.path = filepath.Clean(*p.path)
	}
	return spec, nil
}

// CheckID accepts a sandbox ID that can name a file in the index.
func CheckID(id string) error {
	switch {
	case id == "":
		return errors.New("empty sandbox ID")
	case strings.HasPrefix(id, "."), strings.ContainsAny(id, "/\x00"), len(id) > 200:
		return fmt.Errorf("sandbox ID %q cannot name a file (no '/', no leading '.', at most 200 bytes)", id)
	}
	return nil
}
