package container

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
)

// CheckStatic accepts path when it is an absolute path to an executable
// ELF file that needs no program interpreter: a static binary, which runs
// in any image, whatever libc it has or none. The driver mounts the
// supervisor into images it knows nothing of, so a dynamically linked one
// would fail there at every start.
func CheckStatic(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; it cannot run in an image without its libraries: build it static (CGO_ENABLED=0, as make build does)", path)
		}
	}
	return nil
}
