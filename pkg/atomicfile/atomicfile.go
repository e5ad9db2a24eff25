// Package atomicfile replaces a file whole: the new content goes to a
// temporary file in the same directory (so on the same file system),
// which is then renamed over the target. A reader sees the old file or
// the new one, never a part of either.
//
// It does not fsync: its users write state that a host crash makes
// worthless anyway (records of processes that no longer run, status
// files rewritten at the next change, per-start boot archives).
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteFrom(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom replaces path with what fill writes, mode perm. Nothing is
// renamed when fill fails, and the temporary file is removed on every
// failure.
func WriteFrom(path string, perm fs.FileMode, fill func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// After the rename, a no-op.
	defer os.Remove(tmp.Name())
	ferr := fill(tmp)
	// CreateTemp makes the file 0600; chmod (not umask-bound) sets perm.
	merr := tmp.Chmod(perm)
	if err := errors.Join(ferr, merr, tmp.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
