package memroot

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// needRoot skips a test that mounts, except under CI, where it fails.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testmain.SkipIfMissing(t, errors.New("this test mounts a tmpfs and needs root"), true)
}

// mountsAt counts the mounts at path in this process's mount table.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == path {
			n++
		}
	}
	return n
}

// unmountAll unmounts every mount at path.
func unmountAll(t *testing.T, path string) {
	t.Helper()
	for mountsAt(t, path) > 0 {
		if err := unix.Unmount(path, 0); err != nil {
			t.Errorf("unmount %s: %v", path, err)
			return
		}
	}
}

func TestPrepareTokensMountsATmpfsOnceAndReusesIt(t *testing.T) {
	needRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	root := TokenRoot(state)
	// A token a previous run left on disk, which the mount would hide.
	stale := filepath.Join(root, "old-sandbox", "token")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("stale"), 0o400); err != nil {
		t.Fatal(err)
	}

	got, err := PrepareTokens(state, "", "1m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountAll(t, root)
		if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the stale token stays on disk beneath the mount: %v", err)
		}
	})
	if !got.Mounted || !got.MemoryBacked || got.FSType != "tmpfs" || got.Path != root {
		t.Fatalf("PrepareTokens = %+v, want a tmpfs mounted at %s", got, root)
	}
	fi, err := os.Stat(root)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("token root mode %v (%v), want 0700", fi.Mode(), err)
	}

	// A restarted gateway finds it mounted and stacks nothing over it.
	again, err := PrepareTokens(state, "", "1m")
	if err != nil {
		t.Fatal(err)
	}
	if again.Mounted || !again.MemoryBacked {
		t.Errorf("second PrepareTokens = %+v, want the existing tmpfs reused", again)
	}
	if n := mountsAt(t, root); n != 1 {
		t.Errorf("%d mounts at %s, want 1", n, root)
	}
}

// A mistyped --token-root (/srv, /run) must never be emptied, made 0700
// or mounted over: a chosen root holding anything but sandboxes'
// directories is refused, untouched.
func TestPrepareTokensRefusesAChosenRootOfOtherFilesUntouched(t *testing.T) {
	chosen := filepath.Join(t.TempDir(), "data")
	precious := filepath.Join(chosen, "precious")
	if err := os.MkdirAll(chosen, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(precious, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := PrepareTokens(t.TempDir(), chosen, "1m")
	if !errors.Is(err, ErrNotARoot) || !strings.Contains(err.Error(), chosen) || !strings.Contains(err.Error(), `"precious"`) {
		t.Fatalf("PrepareTokens = %v, want ErrNotARoot naming %s and what it holds", err, chosen)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Errorf("the refused root lost its file: %v", err)
	}
	if fi, err := os.Stat(chosen); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the refused root's mode is %v (%v), want 0755 as it was", fi.Mode(), err)
	}
	if n := mountsAt(t, chosen); n != 0 {
		t.Errorf("%d mounts at the refused root", n)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareTokens(t.TempDir(), file, "1m"); !errors.Is(err, ErrNotARoot) {
		t.Errorf("a file as the token root: %v, want ErrNotARoot", err)
	}
}

func TestPrepareTokensRefusesABadSize(t *testing.T) {
	for _, size := range []string{"", "0", "-1", "12q", "1m; rm", "size=1m"} {
		if _, err := PrepareTokens(t.TempDir(), "", size); err == nil || !strings.Contains(err.Error(), "token root size") {
			t.Errorf("size %q: error %v, want a refusal naming the token root size", size, err)
		}
	}
}

func TestPrepareSocketsMountsATmpfsOnAnEmptyRootOnly(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	unmount := func(root string) { t.Cleanup(func() { unmountAll(t, root) }) }

	fresh := filepath.Join(base, "fresh")
	unmount(SocketRoot(fresh))
	got, err := PrepareSockets(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Mounted || got.FSType != "tmpfs" || got.Path != SocketRoot(fresh) {
		t.Fatalf("PrepareSockets = %+v, want a tmpfs mounted at %s", got, SocketRoot(fresh))
	}
	if again, err := PrepareSockets(fresh); err != nil || again.Mounted || !again.MemoryBacked {
		t.Errorf("second PrepareSockets = %+v, %v; want the existing tmpfs reused", again, err)
	}

	// Sockets of running sandboxes, on disk from a run that could not
	// mount: their sandboxes see them through mounts, so they stay.
	old := filepath.Join(base, "old")
	unmount(SocketRoot(old))
	live := filepath.Join(SocketRoot(old), "running-sandbox")
	if err := os.MkdirAll(live, 0o700); err != nil {
		t.Fatal(err)
	}
	got, err = PrepareSockets(old)
	if err != nil {
		t.Fatal(err)
	}
	if got.Mounted || got.MemoryBacked || mountsAt(t, got.Path) != 0 {
		t.Errorf("PrepareSockets over live sockets = %+v, want the disk directory kept", got)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a running sandbox's socket directory is gone: %v", err)
	}
}
