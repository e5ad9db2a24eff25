package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateDirLockRefusesASecondHolderNamingTheFirst(t *testing.T) {
	dir := t.TempDir()
	first, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockStateDir(dir)
	var inUse *StateDirInUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second lock: %v, want in use by PID %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("message %q does not say what to do", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, LockFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := LockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after the first holder released it: %v", err)
	}
	again.Close()
}
