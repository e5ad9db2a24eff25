package gateway

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/testclock"
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

func TestPrepareTokenRootMountsATmpfsOnceAndReusesIt(t *testing.T) {
	needRoot(t)
	state := filepath.Join(shortTempDir(t), "state")
	root := DefaultTokenRoot(state)
	// A token a previous run left on disk, which the mount would hide.
	stale := filepath.Join(root, "old-sandbox", "token")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("stale"), 0o400); err != nil {
		t.Fatal(err)
	}

	got, err := PrepareTokenRoot(state, "", "1m")
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
		t.Fatalf("PrepareTokenRoot = %+v, want a tmpfs mounted at %s", got, root)
	}
	fi, err := os.Stat(root)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("token root mode %v (%v), want 0700", fi.Mode(), err)
	}

	// A restarted gateway finds it mounted and stacks nothing over it.
	again, err := PrepareTokenRoot(state, "", "1m")
	if err != nil {
		t.Fatal(err)
	}
	if again.Mounted || !again.MemoryBacked {
		t.Errorf("second PrepareTokenRoot = %+v, want the existing tmpfs reused", again)
	}
	if n := mountsAt(t, root); n != 1 {
		t.Errorf("%d mounts at %s, want 1", n, root)
	}
}

func TestPrepareTokenRootRefusesABadSize(t *testing.T) {
	for _, size := range []string{"", "0", "-1", "12q", "1m; rm", "size=1m"} {
		if _, err := PrepareTokenRoot(t.TempDir(), "", size); err == nil || !strings.Contains(err.Error(), "token root size") {
			t.Errorf("size %q: error %v, want a refusal naming the token root size", size, err)
		}
	}
}

func TestGatewayReportsWhetherTokenDirectoriesAreMemoryBacked(t *testing.T) {
	shm := "/dev/shm"
	var st unix.Statfs_t
	if unix.Statfs(shm, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs on this machine", shm)
	}
	for _, tt := range []struct {
		name string
		want float64
	}{
		{"default root on the state directory's disk", 0},
		{"root on a tmpfs", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{t: t, dir: shortTempDir(t), clock: new(testclock.Clock)}
			proc, err := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: filepath.Join(e.dir, "process")})
			if err != nil {
				t.Fatal(err)
			}
			defer proc.Close()
			e.drv = &checkingDriver{Driver: proc, t: t}
			cfg := e.config()
			reg := prometheus.NewRegistry()
			cfg.Registerer = reg
			if tt.want == 1 {
				dir, err := os.MkdirTemp(shm, "sk-tokens")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				cfg.TokenRoot = dir
			}
			g, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if got := g.TokenRoot().MemoryBacked; got != (tt.want == 1) {
				t.Errorf("TokenRoot() = %+v", g.TokenRoot())
			}
			if got := gaugeValue(t, reg, "sandkey_token_dir_memory_backed"); got != tt.want {
				t.Errorf("sandkey_token_dir_memory_backed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRestartRewritesATokenDirectoryFoundEmpty(t *testing.T) {
	e := newEnv(t)
	sb := e.create("rebooted")
	// A host reboot empties the tmpfs; the token itself is still young.
	if err := os.RemoveAll(e.g.tokenDir(sb.ID)); err != nil {
		t.Fatal(err)
	}
	e.restart(0)
	tok, err := e.dirToken(sb.ID)
	if err != nil || tok.Gen() != 2 {
		t.Fatalf("token directory after restart: %v, %v; want a valid gen 2", tok, err)
	}
}

func TestDeleteRemovesTheTokenDirectory(t *testing.T) {
	e := newEnv(t)
	sb := e.create("gone")
	dir := e.g.tokenDir(sb.ID)
	if !strings.HasPrefix(dir, DefaultTokenRoot(e.config().StateDir)+"/") {
		t.Fatalf("token directory %s is not under the token root", dir)
	}
	if err := e.g.Delete(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("token directory survived its sandbox: %v", err)
	}
}
