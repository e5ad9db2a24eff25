package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deadSocket leaves a socket file nothing listens on, as a killed server
// does.
func deadSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

func TestRemoveStaleRemovesOnlyWhatNothingServesOn(t *testing.T) {
	for name, probe := range map[string]Probe{"Dialled": Dialled, "Listening": Listening} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()

			dead := filepath.Join(dir, "dead.sock")
			deadSocket(t, dead)
			if err := RemoveStale(dead, probe); err != nil {
				t.Fatalf("dead socket: %v", err)
			}
			if _, err := os.Lstat(dead); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dead socket still there: %v", err)
			}

			live := filepath.Join(dir, "live.sock")
			l, err := net.Listen("unix", live)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := RemoveStale(live, probe); !errors.Is(err, ErrServing) || !strings.Contains(err.Error(), live) {
				t.Errorf("live socket: err = %v, want ErrServing naming %s", err, live)
			}
			if _, err := os.Lstat(live); err != nil {
				t.Errorf("live socket removed: %v", err)
			}

			file := filepath.Join(dir, "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := RemoveStale(file, probe); err == nil || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("regular file: err = %v, want a refusal", err)
			}
			if _, err := os.Lstat(file); err != nil {
				t.Errorf("regular file removed: %v", err)
			}

			if err := RemoveStale(filepath.Join(dir, "missing.sock"), probe); err != nil {
				t.Errorf("missing socket: %v", err)
			}
		})
	}
}

func TestRemoveStaleKeepsASocketItsProbeCannotJudge(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	deadSocket(t, path)
	broken := errors.New("no /proc")
	err := RemoveStale(path, func(string) (bool, error) { return false, broken })
	if !errors.Is(err, broken) {
		t.Fatalf("err = %v, want the probe's error", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("socket removed although the probe failed: %v", err)
	}
}
