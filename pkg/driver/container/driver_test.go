package container_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/container"
	"github.com/sandkey/sandkey/pkg/driver/drivertest"
	"github.com/sandkey/sandkey/pkg/guest"
)

func TestConformance(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		drivertest.Run(t,
			func(t *testing.T) driver.Driver { return e.driver(t) },
			func(t *testing.T) driver.Spec { e.socket(t); return newSandbox(t).spec() })
	})
}

// serveGateway listens on the sandbox's gateway socket and answers every
// "hello <x>" line with "welcome <x>", until t ends.
func serveGateway(t *testing.T, socketDir string) {
	l, err := net.Listen("unix", filepath.Join(socketDir, guest.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			fmt.Fprintf(conn, "welcome %s\n", strings.TrimPrefix(strings.TrimSpace(line), "hello "))
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
}

func TestSandboxGetsContractMountsEnvironmentAndNoNetwork(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		sb := newSandbox(t, "serve", "an arg")
		sb.Env["FOO"] = "bar"
		sb.Env["SANDKEY_EXTRA"] = "x"
		sb.Env["sandkey_gateway"] = "unix:///elsewhere.sock"
		sb.Env[guest.EnvSandboxID] = "someone-else"
		serveGateway(t, sb.SocketDir)
		spec := sb.spec()
		deleteAtEnd(t, d, spec.SandboxID)
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		name := container.ContainerPrefix + spec.SandboxID
		r := readReport(t, c, name)

		if want := []string{"--", "serve", "an arg"}; !slices.Equal(r.Args, want) {
			t.Errorf("supervisor args = %q, want %q", r.Args, want)
		}
		if r.PID != 1 {
			t.Errorf("supervisor runs as pid %d, want 1", r.PID)
		}
		var sandkey []string
		for _, kv := range r.Env {
			if strings.HasPrefix(strings.ToUpper(kv), guest.EnvPrefix) {
				sandkey = append(sandkey, kv)
			}
		}
		slices.Sort(sandkey)
		wantSandkey := []string{
			guest.EnvAuthMode + "=dir",
			guest.EnvGateway + "=unix:///run/sandkey/gw/gw.sock",
			guest.EnvInstanceID + "=" + spec.InstanceID,
			guest.EnvSandboxID + "=" + spec.SandboxID,
			guest.EnvStatusFile + "=/run/sandkey/status.json",
			guest.EnvTokenDir + "=/run/sandkey/auth",
		}
		if !slices.Equal(sandkey, wantSandkey) {
			t.Errorf("SANDKEY_* in the sandbox = %q, want exactly %q", sandkey, wantSandkey)
		}
		if !slices.Contains(r.Env, "FOO=bar") {
			t.Errorf("user variable FOO=bar missing from %q", r.Env)
		}
		if !strings.Contains(r.TokenDirWrite, "read-only file system") {
			t.Errorf("creating a file in the token directory gave %q, want a read-only file system error", r.TokenDirWrite)
		}
		if want := []string{"lo"}; !slices.Equal(r.Interfaces, want) {
			t.Errorf("network interfaces = %q, want only %q (network none)", r.Interfaces, want)
		}
		if want := "ok: welcome " + spec.SandboxID; r.Gateway != want {
			t.Errorf("dialing the gateway socket from the sandbox: %q, want %q", r.Gateway, want)
		}
		if _, err := os.Stat(filepath.Join(spec.TokenDir, "standin-probe")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the sandbox created a file in its token directory: %v", err)
		}

		info, err := c.ContainerInspect(ctxT(t), name)
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Mounts) != 2 {
			t.Errorf("container has mounts %+v, want the token and socket directories", info.Mounts)
		}
		for _, m := range info.Mounts {
			fi, err := os.Stat(m.Source)
			if err != nil || !fi.IsDir() {
				t.Errorf("mount %s -> %s: source is not a directory (%v)", m.Source, m.Destination, err)
			}
			if m.RW {
				t.Errorf("mount %s -> %s is writable, want read-only", m.Source, m.Destination)
			}
		}
		if info.HostConfig.NetworkMode != "none" {
			t.Errorf("network mode = %q, want none", info.HostConfig.NetworkMode)
		}
		for k, v := range map[string]string{
			container.LabelManaged: "true", container.LabelSandboxID: spec.SandboxID, container.LabelInstance: spec.InstanceID,
		} {
			if info.Config.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, info.Config.Labels[k], v)
			}
		}
	})
}

func TestTokenRotationOnTheHostIsSeenInsideTheSandbox(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		sb := newSandbox(t)
		spec := sb.spec()
		deleteAtEnd(t, d, spec.SandboxID)
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		name := container.ContainerPrefix + spec.SandboxID
		waitLog(t, c, name, "standin token tok-1")
		for _, tok := range []string{"tok-2", "tok-3"} {
			start := time.Now()
			writeToken(t, sb.tokens, tok)
			waitLog(t, c, name, "standin token "+tok)
			t.Logf("%s: %s seen in the sandbox's logs %s after the write", e.name, tok, time.Since(start).Round(time.Millisecond))
		}
	})
}

func TestNewDriverFindsRunningSandboxByItsLabels(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		before := e.driver(t)
		spec := newSandbox(t).spec()
		deleteAtEnd(t, before, spec.SandboxID)
		if err := before.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		before.Close() // the gateway goes away; the sandbox runs on

		after := e.driver(t)
		st := waitState(t, after, spec.SandboxID, driver.StateRunning)
		if st.InstanceID != spec.InstanceID {
			t.Errorf("restarted driver reports instance %q, want %q", st.InstanceID, spec.InstanceID)
		}
		listed, err := after.List(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(listed, func(s container.Sandbox) bool { return s.SandboxID == spec.SandboxID })
		if i < 0 {
			t.Fatalf("List = %+v, want sandbox %s in it", listed, spec.SandboxID)
		}
		if listed[i].State != driver.StateRunning || listed[i].InstanceID != spec.InstanceID {
			t.Errorf("List entry = %+v, want running instance %s", listed[i], spec.InstanceID)
		}
		// The stand-in handles SIGTERM once it has reported; before, Go's
		// runtime ends it with code 2.
		waitLog(t, e.client(t), container.ContainerPrefix+spec.SandboxID, "standin report")
		if err := after.Stop(ctxT(t), spec.SandboxID, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if st := waitState(t, after, spec.SandboxID, driver.StateStopped); !st.Exited || st.ExitCode != 0 {
			t.Errorf("stopped sandbox = %+v, want exited with code 0", st)
		}
	})
}

// registry is a TCP listener standing in for an image registry: it counts
// the connections it gets, and answers none.
type registry struct {
	l     net.Listener
	conns atomic.Int64
	done  chan struct{}
}

func newRegistry(t *testing.T) *registry {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &registry{l: l, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-r.done })
	return r
}

func TestMissingImageFailsClearlyAndIsNeverPulled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		reg := newRegistry(t)
		ref := reg.l.Addr().String() + "/sandkey/missing:v1"
		sb := newSandbox(t)
		sb.Image = ref
		spec := sb.spec()
		deleteAtEnd(t, d, spec.SandboxID)

		for op, call := range map[string]func() error{
			"Create": func() error { return d.Create(ctxT(t), spec) },
			"Start":  func() error { return d.Start(ctxT(t), spec) },
		} {
			err := call()
			if !errors.Is(err, container.ErrImageNotFound) {
				t.Fatalf("%s with a missing image = %v, want container.ErrImageNotFound", op, err)
			}
			for _, want := range []string{ref, "not found locally", "make images"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s error %q does not say %q", op, err, want)
				}
			}
		}
		if st, err := d.Status(ctxT(t), spec.SandboxID); err != nil || st.State != driver.StateMissing {
			t.Errorf("status after the failed starts = %+v, %v; want missing", st, err)
		}
		if n := reg.conns.Load(); n != 0 {
			t.Fatalf("the engine connected %d times to the registry of the missing image", n)
		}

		// The registry does see a pull: the check above could fail.
		if rc, err := c.ImagePull(ctxT(t), ref, image.PullOptions{}); err == nil {
			io.Copy(io.Discard, rc)
			rc.Close()
		}
		if reg.conns.Load() == 0 {
			t.Error("an explicit pull did not reach the stand-in registry; the no-pull check proves nothing")
		}
	})
}

// TestCreateBeforeTheDirectoriesExistDefersTheContainerToStart pins the
// gateway's order: Create comes before the first token is written and the
// socket opened, so the token and socket directories may not exist yet.
// Create then checks the image (never pulling; something to run) and makes
// no container; Start, once the directories are there, makes it.
func TestCreateBeforeTheDirectoriesExistDefersTheContainerToStart(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d := e.driver(t)
		sb := newSandbox(t)
		spec := sb.spec()
		deleteAtEnd(t, d, spec.SandboxID)
		tokenDir, socketDir := spec.TokenDir, spec.SocketDir
		spec.TokenDir = filepath.Join(t.TempDir(), "not-yet", "auth")
		spec.SocketDir = filepath.Join(t.TempDir(), "not-yet", "gw")

		missing := spec
		missing.Image = "sandkey/missing:v1"
		if err := d.Create(ctxT(t), missing); !errors.Is(err, container.ErrImageNotFound) {
			t.Fatalf("Create with a missing image and no directories = %v, want container.ErrImageNotFound", err)
		}
		// The stand-in image has no CMD: without a command it has nothing
		// to run, which Create says at once.
		idle := spec
		idle.Command = nil
		if err := d.Create(ctxT(t), idle); err == nil || !strings.Contains(err.Error(), `image "`+standInImage+`" has no ENTRYPOINT or CMD`) {
			t.Fatalf("Create with nothing to run and no directories = %v, want an error naming the image", err)
		}
		if err := d.Create(ctxT(t), spec); err != nil {
			t.Fatalf("Create before the directories exist: %v", err)
		}
		if st, err := d.Status(ctxT(t), spec.SandboxID); err != nil || st.State != driver.StateMissing {
			t.Errorf("status after Create without directories = %+v, %v; want missing (no container yet)", st, err)
		}
		if err := d.Start(ctxT(t), spec); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Start without directories = %v, want an error saying the directory does not exist", err)
		}

		spec.TokenDir, spec.SocketDir = tokenDir, socketDir
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatalf("Start once the directories exist: %v", err)
		}
		waitState(t, d, spec.SandboxID, driver.StateRunning)
	})
}

func TestStatusReportsWorkloadExitCode(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d := e.driver(t)
		spec := newSandbox(t, "exit", "3").spec()
		deleteAtEnd(t, d, spec.SandboxID)
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := d.Status(ctxT(t), spec.SandboxID)
			if err != nil {
				t.Fatal(err)
			}
			if st.Exited {
				if st.State != driver.StateStopped || st.ExitCode != 3 || st.InstanceID != spec.InstanceID {
					t.Errorf("status = %+v, want stopped, exit code 3, instance %s", st, spec.InstanceID)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no exit reported after 30s: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestStopKillsSandboxIgnoringSIGTERMAfterGrace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		spec := newSandbox(t, "ignore-term").spec()
		deleteAtEnd(t, d, spec.SandboxID)
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		readReport(t, c, container.ContainerPrefix+spec.SandboxID) // SIGTERM is ignored from now on
		start := time.Now()
		if err := d.Stop(ctxT(t), spec.SandboxID, time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if took < time.Second {
			t.Errorf("Stop returned after %s, before the 1s grace", took)
		}
		if st := waitState(t, d, spec.SandboxID, driver.StateStopped); !st.Exited || st.ExitCode != 137 {
			t.Errorf("status = %+v, want exited with 137 (SIGKILL)", st)
		}
	})
}

// TestDeleteKillsRunningSandboxWithoutGrace pins that Delete does not wait
// out a stop timeout (Podman's forced remove would wait 10 s for a
// workload that ignores SIGTERM): the gateway stops a sandbox with the
// operator's grace before it deletes it.
func TestDeleteKillsRunningSandboxWithoutGrace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		spec := newSandbox(t, "ignore-term").spec()
		deleteAtEnd(t, d, spec.SandboxID)
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		readReport(t, c, container.ContainerPrefix+spec.SandboxID)
		start := time.Now()
		if err := d.Delete(ctxT(t), spec.SandboxID); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("%s: Delete of a running sandbox ignoring SIGTERM took %s", e.name, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("Delete took %s: it waited out a stop timeout instead of killing", took)
		}
		if st, err := d.Status(ctxT(t), spec.SandboxID); err != nil || st.State != driver.StateMissing {
			t.Errorf("status after Delete = %+v, %v; want missing", st, err)
		}
	})
}

func TestStartReusesCreatedContainerAndMakesANewOneForANewInstance(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		sb := newSandbox(t)
		spec := sb.spec()
		name := container.ContainerPrefix + spec.SandboxID
		deleteAtEnd(t, d, spec.SandboxID)
		containerID := func() string {
			t.Helper()
			info, err := c.ContainerInspect(ctxT(t), name)
			if err != nil {
				t.Fatal(err)
			}
			return info.ID
		}

		if err := d.Create(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		created := containerID()
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		if id := containerID(); id != created {
			t.Errorf("Start of the created spec made container %s, want Create's %s", id, created)
		}
		if err := d.Start(ctxT(t), spec); !errors.Is(err, container.ErrAlreadyRunning) {
			t.Errorf("Start of a running sandbox = %v, want ErrAlreadyRunning", err)
		}
		waitState(t, d, spec.SandboxID, driver.StateRunning)
		if err := d.Stop(ctxT(t), spec.SandboxID, 10*time.Second); err != nil {
			t.Fatal(err)
		}

		sb.InstanceID += "-2"
		spec = sb.spec()
		if err := d.Start(ctxT(t), spec); err != nil {
			t.Fatal(err)
		}
		if id := containerID(); id == created {
			t.Error("Start with a new instance ID kept the old container, whose environment names the old instance")
		}
		r := readReport(t, c, name)
		if want := guest.EnvInstanceID + "=" + spec.InstanceID; !slices.Contains(r.Env, want) {
			t.Errorf("restarted sandbox's environment lacks %s: %q", want, r.Env)
		}
	})
}

func TestContainerWithSandboxNameButNotOursIsLeftAlone(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engine) {
		d, c := e.driver(t), e.client(t)
		spec := newSandbox(t).spec()
		name := container.ContainerPrefix + spec.SandboxID
		resp, err := c.ContainerCreate(ctxT(t), &ctr.Config{Image: standInImage, Cmd: []string{"serve"}},
			&ctr.HostConfig{NetworkMode: "none"}, nil, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.ContainerRemove(ctxT(t), resp.ID, ctr.RemoveOptions{Force: true}) })

		for op, call := range map[string]func() error{
			"Status": func() error { _, err := d.Status(ctxT(t), spec.SandboxID); return err },
			"Create": func() error { return d.Create(ctxT(t), spec) },
			"Start":  func() error { return d.Start(ctxT(t), spec) },
			"Stop":   func() error { return d.Stop(ctxT(t), spec.SandboxID, time.Second) },
			"Delete": func() error { return d.Delete(ctxT(t), spec.SandboxID) },
		} {
			if err := call(); !errors.Is(err, container.ErrNotManaged) {
				t.Errorf("%s = %v, want ErrNotManaged", op, err)
			}
		}
		info, err := c.ContainerInspect(ctxT(t), name)
		if err != nil {
			t.Fatalf("the foreign container is gone: %v", err)
		}
		if info.ID != resp.ID || info.State.Running {
			t.Errorf("the foreign container was replaced or started: %+v", info.State)
		}
	})
}

func TestInvalidSpecIsRefusedBeforeTheEngineIsAsked(t *testing.T) {
	// No engine listens there: a call that reached it would fail otherwise.
	d, err := container.New(container.Engine{Name: "test"}, container.Config{Host: "unix:///nonexistent/engine.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, want string
		spec       driver.Spec
	}{
		{"token dir is a file", "not a directory", driver.Spec{SandboxID: "a", Image: "x", TokenDir: file, SocketDir: dir}},
		{"relative socket dir", "not an absolute path", driver.Spec{SandboxID: "a", Image: "x", TokenDir: dir, SocketDir: "gw"}},
		{"no image", "no image", driver.Spec{SandboxID: "a", TokenDir: dir, SocketDir: dir}},
		{"bad ID", "cannot name a container", driver.Spec{SandboxID: "../a", Image: "x", TokenDir: dir, SocketDir: dir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for op, err := range map[string]error{"Create": d.Create(t.Context(), tc.spec), "Start": d.Start(t.Context(), tc.spec)} {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s = %v, want an error saying %q", op, err, tc.want)
				}
			}
		})
	}
	if _, err := d.Status(t.Context(), "a"); err == nil || cerrdefs.IsNotFound(err) {
		t.Errorf("Status against no engine = %v, want a connection error", err)
	}
}
