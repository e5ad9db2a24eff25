package containere2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/supervisor"
)

// minLifetime is the shortest token lifetime the gateway accepts
// (auth.MinLifetime): the expiry tests wait it out.
const minLifetime = 10 * time.Second

// longLifetime keeps the rotation sweep out of tests that rotate by hand.
const longLifetime = 10 * time.Minute

// pastExpiry sleeps until the token st names has expired, plus a margin:
// the supervisor compares exp strictly (no leeway), and so does the status
// file's token_expired.
func pastExpiry(t *testing.T, st supervisor.Status) {
	t.Helper()
	if st.ExpiresAt.IsZero() {
		t.Fatalf("status %+v names no token expiry", st)
	}
	time.Sleep(time.Until(st.ExpiresAt) + time.Second)
}

func TestResumeAfterExpiryRegistersOnTheFirstTryAndExecWorks(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, minLifetime)
		sb := h.create("sleeper", "sleep", "600")
		ctx := context.Background()
		if _, err := h.gw.Stop(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
		// The stopped container keeps its layer, and in it the status
		// file, current up to the stop: it names the last token held.
		last := h.waitStatus(sb.ID, 5*time.Second, "status file of the stopped sandbox", func(st supervisor.Status) bool { return st.Gen > 0 })
		pastExpiry(t, last)

		refusedBefore := h.counter("sandkey_session_rejections_total", nil)
		started, err := h.gw.Start(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if started.InstanceID == sb.InstanceID || started.LatestGen <= last.Gen {
			t.Fatalf("resume gave instance %s gen %d; want a new instance (was %s) and a generation above %d",
				started.InstanceID, started.LatestGen, sb.InstanceID, last.Gen)
		}
		took := h.eventually(registerBound, "registered after resume", func() bool { return h.gw.Sessions().Connected(sb.ID) })
		t.Logf("%s: resumed past expiry, registered %s after Start returned", e.name, took.Round(time.Millisecond))

		// The first Hello of the new instance was accepted: one accepted
		// session (checked again at the end), nothing refused, and the
		// supervisor holds the token minted for the resume.
		h.eventually(5*time.Second, "gateway logs the session's acceptance", func() bool {
			return len(h.acceptedSessions(sb.ID, started.InstanceID)) > 0
		})
		if refused := h.counter("sandkey_session_rejections_total", nil) - refusedBefore; refused != 0 {
			t.Errorf("gateway refused or ended %v sessions during the resume, want none", refused)
		}
		h.waitStatus(sb.ID, 5*time.Second, "status file shows the resume's generation", func(st supervisor.Status) bool {
			return st.Gen >= started.LatestGen && !st.TokenExpired
		})

		out, _, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token")
		if res.ExitCode != 0 || out != h.hostToken(sb.ID) {
			t.Fatalf("exec cat token after resume: exit %d %q; want the host's newest token", res.ExitCode, res.Error)
		}
		if out, _, res := h.exec(sb.ID, "sh", "-c", "echo instance=$SANDKEY_INSTANCE_ID"); res.ExitCode != 0 ||
			strings.TrimSpace(out) != "instance="+started.InstanceID {
			t.Fatalf("exec in the resumed sandbox: %q, %+v; want instance=%s", out, res, started.InstanceID)
		}
		if n := len(h.acceptedSessions(sb.ID, started.InstanceID)); n != 1 {
			t.Errorf("gateway accepted %d sessions of the resumed instance, want exactly 1", n)
		}
	})
}

func TestGatewayDownPastExpiryRunningSandboxGetsFreshTokenThroughTheDirectory(t *testing.T) {
	t.Parallel()
	// dirBound bounds the time from the gateway's Open (which re-mints
	// and writes the directory, then opens the sandbox's socket) to the
	// status file naming the new token: an fsnotify event crosses a bind
	// mount in about 1 ms; the rest is the status file's round trips
	// through the engine's archive API (0.1-0.7 s measured).
	const dirBound = 5 * time.Second
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, minLifetime)
		sb := h.create("lonely", "sleep", "600")

		h.close()
		// The status file is rewritten every 5 s and at every new token:
		// once it says the session is gone, it names the last token the
		// supervisor got, and no rotation can follow with the gateway down.
		last := h.waitStatus(sb.ID, 10*time.Second, "supervisor notices the gateway is gone", func(st supervisor.Status) bool {
			return !st.Connected && st.Gen > 0
		})
		pastExpiry(t, last)
		// It must own up to the expired token, or the test proves nothing.
		h.waitStatus(sb.ID, 10*time.Second, "supervisor reports its token expired while the gateway is down", func(st supervisor.Status) bool {
			return st.TokenExpired && st.Gen == last.Gen
		})

		h.open()
		reopened := time.Now()
		latest := h.get(sb.ID).LatestGen
		if latest <= last.Gen {
			t.Fatalf("gateway reopened without re-minting: latest gen %d, the supervisor holds %d", latest, last.Gen)
		}
		held := h.waitStatus(sb.ID, dirBound, "supervisor holds the re-minted token", func(st supervisor.Status) bool {
			return st.Gen >= latest && !st.TokenExpired
		})
		t.Logf("%s: re-minted token held at most %s after the gateway reopened", e.name, time.Since(reopened).Round(time.Millisecond))
		if !held.ExpiresAt.After(time.Now()) {
			t.Errorf("held token expires at %s, in the past", held.ExpiresAt)
		}

		h.eventually(reconnectBound, "supervisor re-registered", func() bool { return h.gw.Sessions().Connected(sb.ID) })
		// The directory delivered first: the supervisor's Hello already
		// named the re-minted generation (or a later rotation's). The
		// supervisor dials as soon as the socket reappears, but the token
		// was written before the socket was made, and the source only
		// reads and verifies it while the dial needs a round trip with
		// the gateway.
		h.eventually(5*time.Second, "gateway logs the session's acceptance", func() bool {
			return len(h.acceptedSessions(sb.ID, sb.InstanceID)) > 0
		})
		for _, acc := range h.acceptedSessions(sb.ID, sb.InstanceID) {
			if got, _ := acc.ContextMap()["hello_gen"].(uint64); got < latest {
				t.Errorf("supervisor registered holding gen %d, want at least %d (from the directory, before the session)", got, latest)
			}
		}
		if out, _, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token"); res.ExitCode != 0 || out != h.hostToken(sb.ID) {
			t.Fatalf("exec after the gateway returned: exit %d %q; want the host's newest token", res.ExitCode, res.Error)
		}
	})
}

func TestRotationWhileSessionIsCutArrivesAtTheNextRegistration(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, longLifetime)
		sb := h.create("paused", "sleep", "600")
		name := containerName(sb.ID)
		oldGen := h.get(sb.ID).LatestGen
		oldToken := h.hostToken(sb.ID)
		jwks, err := tokendir.ReadFile(h.tokenDir(sb.ID), tokendir.JWKSFile)
		if err != nil {
			t.Fatal(err)
		}

		// Freeze the supervisor: the gateway ends the session after three
		// silent heartbeats, so the rotation below finds no session.
		ctx := context.Background()
		if err := h.engine.ContainerPause(ctx, name); err != nil {
			t.Fatal(err)
		}
		paused := true
		t.Cleanup(func() {
			if paused {
				h.engine.ContainerUnpause(context.Background(), name)
			}
		})
		h.eventually(10*time.Second, "gateway ends the frozen supervisor's session", func() bool { return !h.gw.Sessions().Connected(sb.ID) })
		newGen := h.rotate(sb.ID)

		// Take the directory channel away, as a host crash could before
		// the write reached the disk: the old token goes back, and only the
		// registration can deliver the new one.
		w, err := tokendir.NewWriter(h.tokenDir(sb.ID))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(map[string][]byte{tokendir.TokenFile: []byte(oldToken), tokendir.JWKSFile: jwks}); err != nil {
			t.Fatal(err)
		}

		if err := h.engine.ContainerUnpause(ctx, name); err != nil {
			t.Fatal(err)
		}
		paused = false
		h.eventually(registerBound, "supervisor re-registered after the pause", func() bool { return h.gw.Sessions().Connected(sb.ID) })
		h.eventually(5*time.Second, "gateway records the new generation as delivered", func() bool {
			return h.get(sb.ID).DeliveredGen == newGen
		})
		h.waitStatus(sb.ID, 5*time.Second, "supervisor's status names the new generation", func(st supervisor.Status) bool {
			return st.Gen == newGen
		})

		accepted := h.acceptedSessions(sb.ID, sb.InstanceID)
		if len(accepted) != 2 {
			t.Fatalf("gateway accepted %d sessions, want 2 (before and after the pause)", len(accepted))
		}
		again := accepted[1].ContextMap()
		if again["hello_gen"] != oldGen || again["token_sent"] != true {
			t.Errorf("registration after the pause: hello_gen=%v token_sent=%v; want the supervisor to name gen %d and get gen %d in Accepted",
				again["hello_gen"], again["token_sent"], oldGen, newGen)
		}
		if out, _, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token"); res.ExitCode != 0 || out != oldToken {
			t.Errorf("the sandbox's directory no longer holds the old token (exit %d): the new one may have come from there", res.ExitCode)
		}
	})
}

func TestRotationShowsThroughTheReadOnlyDirectoryMountWhichTheSandboxCannotWrite(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		h := newHarness(t, e, longLifetime)
		sb := h.create("reader", "sleep", "600")
		for range 3 {
			gen := h.rotate(sb.ID)
			host := h.hostToken(sb.ID)
			out, errOut, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token")
			if res.ExitCode != 0 || out != host {
				t.Fatalf("gen %d: cat /run/sandkey/auth/token in the sandbox: exit %d %q %q; want the host's newest token",
					gen, res.ExitCode, res.Error, errOut)
			}
			h.waitStatus(sb.ID, 5*time.Second, "supervisor holds the rotated generation", func(st supervisor.Status) bool {
				return st.Gen == gen
			})
		}

		hostToken := h.hostToken(sb.ID)
		entries := func() []string {
			des, err := os.ReadDir(h.tokenDir(sb.ID))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, de := range des {
				names = append(names, de.Name())
			}
			return names
		}
		before := entries()
		for _, tc := range []struct {
			name string
			argv []string
		}{
			{"overwrite the token", []string{"sh", "-c", "echo forged > /run/sandkey/auth/token"}},
			{"plant a file", []string{"touch", "/run/sandkey/auth/planted"}},
			{"remove the token", []string{"rm", "-f", "/run/sandkey/auth/token"}},
			{"plant a symlink out of the directory", []string{"ln", "-s", "/etc", "/run/sandkey/auth/..evil"}},
			{"make a directory", []string{"mkdir", "/run/sandkey/auth/d"}},
			{"plant a file beside the gateway socket", []string{"touch", "/run/sandkey/gw/planted"}},
		} {
			_, errOut, res := h.exec(sb.ID, tc.argv...)
			if res.ExitCode == 0 || !strings.Contains(strings.ToLower(errOut), "read-only file system") {
				t.Errorf("%s (%q): exit %d, stderr %q; want a read-only file system error", tc.name, tc.argv, res.ExitCode, errOut)
			}
		}
		if after := entries(); !slices.Equal(after, before) {
			t.Errorf("token directory on the host changed from %q to %q", before, after)
		}
		if got := h.hostToken(sb.ID); got != hostToken {
			t.Error("the host's token changed under the sandbox's writes")
		}
		if _, err := os.Stat(filepath.Join(memroot.SocketRoot(filepath.Join(h.dir, "state")), sb.ID, "planted")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the sandbox planted a file in its socket directory: %v", err)
		}
	})
}

func TestSingleFileBindMountGoesStaleAndTheDriverMountsOnlyDirectories(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, e *engine) {
		t.Run("single file mount goes stale", func(t *testing.T) {
			c := e.client(t)
			auth := filepath.Join(t.TempDir(), "auth")
			w, err := tokendir.NewWriter(auth)
			if err != nil {
				t.Fatal(err)
			}
			write := func(token string) {
				if err := w.Write(map[string][]byte{tokendir.TokenFile: []byte(token)}); err != nil {
					t.Fatal(err)
				}
			}
			write("generation-1")
			ctx := context.Background()
			// What a careless driver would do, beside what sandkey does:
			// the token file alone, and the whole directory.
			resp, err := c.ContainerCreate(ctx,
				&ctr.Config{Image: testImage, Entrypoint: []string{"sleep"}, Cmd: []string{"600"}},
				&ctr.HostConfig{NetworkMode: "none", Mounts: []mount.Mount{
					{Type: mount.TypeBind, Source: filepath.Join(auth, tokendir.TokenFile), Target: "/single/token", ReadOnly: true},
					{Type: mount.TypeBind, Source: auth, Target: "/dir", ReadOnly: true},
				}}, nil, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				c.ContainerRemove(context.Background(), resp.ID, ctr.RemoveOptions{Force: true})
			})
			if err := c.ContainerStart(ctx, resp.ID, ctr.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			read := func(path string) string {
				out, errOut, code := engineExec(t, c, resp.ID, "cat", path)
				if code != 0 {
					t.Fatalf("cat %s: exit %d: %s", path, code, errOut)
				}
				return out
			}
			if a, b := read("/single/token"), read("/dir/token"); a != "generation-1" || b != "generation-1" {
				t.Fatalf("before any rotation: file mount %q, directory mount %q; want generation-1", a, b)
			}
			// Two writes: the second removes the first one's timestamped
			// directory, the file the single-file mount pinned.
			write("generation-2")
			write("generation-3")
			if got := read("/dir/token"); got != "generation-3" {
				t.Errorf("directory mount reads %q after the rotations, want generation-3", got)
			}
			if got := read("/single/token"); got != "generation-1" {
				t.Errorf("single-file mount reads %q after the rotations; it was expected to stay at generation-1 (stale)", got)
			}
		})

		t.Run("driver mounts only directories", func(t *testing.T) {
			h := newHarness(t, e, longLifetime)
			sb := h.create("mounts", "sleep", "600")
			info, err := h.engine.ContainerInspect(context.Background(), containerName(sb.ID))
			if err != nil {
				t.Fatal(err)
			}
			// The engine's own account of the mounts (Podman lists the
			// driver's mounts among the binds as well).
			var targets []string
			for _, m := range info.Mounts {
				targets = append(targets, m.Destination)
				fi, err := os.Stat(m.Source)
				if err != nil || !fi.IsDir() {
					t.Errorf("mount %s -> %s: the source is not a directory (%v)", m.Source, m.Destination, err)
				}
				if m.RW {
					t.Errorf("mount %s -> %s is writable", m.Source, m.Destination)
				}
			}
			slices.Sort(targets)
			if want := []string{guest.DefaultTokenDir, guest.SocketDir}; !slices.Equal(targets, want) {
				t.Errorf("mount targets %q, want %q", targets, want)
			}
			// And the directory mount follows two rotations, which a
			// single-file mount would not.
			h.rotate(sb.ID)
			h.rotate(sb.ID)
			if out, _, res := h.exec(sb.ID, "cat", "/run/sandkey/auth/token"); res.ExitCode != 0 || out != h.hostToken(sb.ID) {
				t.Errorf("after two rotations the sandbox reads another token than the host's newest (exit %d)", res.ExitCode)
			}
		})
	})
}
