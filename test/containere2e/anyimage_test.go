package containere2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/supervisor"
)

// TestAnyImageIsASandboxWithTheMountedSupervisor runs images that hold no
// sandkey layer (busybox FROM scratch, built by the test): the driver
// mounts the host's supervisor as their entrypoint, and they register,
// rotate, exec and see their token directory read-only; an image's
// ENTRYPOINT and CMD run when no command is given, and its USER runs the
// workload and execs while the supervisor stays root as PID 1.
func TestAnyImageIsASandboxWithTheMountedSupervisor(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, longLifetime)

		t.Run("stock image registers rotates and execs", func(t *testing.T) {
			sb := h.createFrom("stock", stockImage, "sleep", "600")
			if _, _, res := h.exec(sb.ID, "test", "-e", "/supervisor"); res.ExitCode == 0 {
				t.Fatal("the stock image has /supervisor; the test would not prove the mount")
			}
			gen := h.rotate(sb.ID)
			h.waitStatus(sb.ID, 5*time.Second, "supervisor holds the rotated generation", func(st supervisor.Status) bool {
				return st.Gen == gen
			})
			if out, errOut, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token"); res.ExitCode != 0 || out != h.hostToken(sb.ID) {
				t.Fatalf("exec cat token: exit %d %q %q; want the host's newest token", res.ExitCode, res.Error, errOut)
			}
			for _, path := range []string{"/run/sandkey/auth/planted", guest.SupervisorPath} {
				_, errOut, res := h.exec(sb.ID, "sh", "-c", "echo x > "+path)
				if res.ExitCode == 0 || !strings.Contains(strings.ToLower(errOut), "read-only file system") {
					t.Errorf("write %s: exit %d, stderr %q; want a read-only file system error", path, res.ExitCode, errOut)
				}
			}
		})

		t.Run("image ENTRYPOINT and CMD run without a command", func(t *testing.T) {
			sb := h.createFrom("entrypoint", entrypointImage)
			var out string
			h.eventually(5*time.Second, "the entrypoint wrote what it was given", func() bool {
				o, _, res := h.exec(sb.ID, "cat", "/ran")
				out = o
				return res.ExitCode == 0
			})
			if strings.TrimSpace(out) != "from-cmd arg" {
				t.Errorf("the image's entrypoint got %q, want its CMD, \"from-cmd arg\"", out)
			}
		})

		t.Run("image USER runs the workload and execs under a root supervisor", func(t *testing.T) {
			sb := h.createFrom("user", userImage, "sh", "-c", `{ id; echo "home=$HOME"; } > who; exec sleep 600`)
			const want = "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\nhome=/home/app\n"
			var who string
			h.eventually(5*time.Second, "the workload wrote who it is in its working directory", func() bool {
				o, _, r := h.exec(sb.ID, "cat", "/home/app/who")
				who = o
				return r.ExitCode == 0 && strings.Count(o, "\n") == 2
			})
			if who != want {
				t.Errorf("workload identity %q, want %q", who, want)
			}
			out, _, res := h.exec(sb.ID, "sh", "-c", `id; echo "$FROM_IMAGE $PWD"; while read -r k v rest; do case $k in Uid:) echo "pid1 uid $v";; esac; done </proc/1/status`)
			if wantExec := "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\nyes /home/app\npid1 uid 0\n"; res.ExitCode != 0 || out != wantExec {
				t.Errorf("exec as the image's user: exit %d, output %q; want %q", res.ExitCode, out, wantExec)
			}
		})
	})
}
