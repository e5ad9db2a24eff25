package statedir

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sandkey/sandkey/pkg/atomicfile"
)

// WriteJSON writes v as JSON to path, mode 0600, through a temporary file
// renamed over path (see the package doc).
func WriteJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// ReadJSON decodes the JSON file at path into v; a missing file yields an
// error matching fs.ErrNotExist.
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// ReadRecord decodes the JSON record file in dir (see ReadJSON).
func ReadRecord[T any](dir, file string) (T, error) {
	var r T
	err := ReadJSON(filepath.Join(dir, file), &r)
	return r, err
}

// MakePrivate creates dir and its missing parents and makes dir 0700,
// whatever mode it had.
func MakePrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}
