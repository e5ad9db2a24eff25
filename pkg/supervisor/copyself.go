package supervisor

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CopySelf copies the running supervisor's binary to dest, mode 0555,
// through a temporary file beside it renamed into place, so that dest is
// either absent or whole. It is `supervisor --copy-to DEST`: the init
// container of a Kubernetes pod whose image has no supervisor runs it
// from a supervisor-only image (FROM scratch: no shell, no cp) to put the
// binary into a volume the workload's container then runs it from.
func CopySelf(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("copy the supervisor to %s: find its own binary: %w", dest, err)
	}
	return copyExecutable(self, dest)
}

func copyExecutable(src, dest string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy the supervisor to %s: %w", dest, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".*")
	if err != nil {
		return fmt.Errorf("copy the supervisor to %s: %w", dest, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o555)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dest)
	}
	if err != nil {
		return fmt.Errorf("copy the supervisor from %s to %s: %w", src, dest, err)
	}
	return nil
}
