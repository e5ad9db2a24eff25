package gateway

import (
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
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/testclock"
)

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
	if !strings.HasPrefix(dir, memroot.TokenRoot(e.config().StateDir)+"/") {
		t.Fatalf("token directory %s is not under the token root", dir)
	}
	if err := e.g.Delete(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("token directory survived its sandbox: %v", err)
	}
}
