package vminit

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// loadModule loads the kernel module file at path; one already loaded is
// skipped. Compressed modules (.ko.xz, .ko.zst, .ko.gz) are handed to the
// kernel to decompress, which kernels from 6.4 with CONFIG_MODULE_DECOMPRESS
// do.
func loadModule(path string, log *zap.Logger) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	switch {
	case errors.Is(err, unix.EEXIST):
		log.Debug("module already loaded", zap.String("path", path))
	case err != nil:
		return fmt.Errorf("load module %s: %w", path, err)
	default:
		log.Debug("loaded module", zap.String("path", path))
	}
	return nil
}
