package container

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
)

// unitSpec is a valid spec whose directories exist under t's temp dir.
func unitSpec(t *testing.T) driver.Spec {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"auth", "gw"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return driver.Spec{
		SandboxID:  "sb1",
		Name:       "one",
		InstanceID: "inst1",
		Image:      "example/sandbox:1",
		Command:    []string{"serve", "--flag"},
		Env:        map[string]string{"FOO": "bar"},
		SandboxEnv: map[string]string{guest.EnvAuthMode: "dir", guest.EnvSandboxID: "sb1", guest.EnvInstanceID: "inst1"},
		TokenDir:   filepath.Join(root, "auth"),
		SocketDir:  filepath.Join(root, "gw"),
		StateDir:   root,
	}
}

// bakedImage is an image FROM sandkey-base: the supervisor is its
// entrypoint.
func bakedImage(id string) image {
	return image{id: id, entrypoint: []string{guest.BakedSupervisor, "--"}}
}

// TestNoMountSourceIsEverARegularFile is the regression guard for the one
// rule of the token directory: a bind mount of a single file goes stale
// after the first rename over it, so every mount the driver asks for must
// be a directory, and a spec naming a file (directly or through a
// symlink) is refused.
func TestNoMountSourceIsEverARegularFile(t *testing.T) {
	spec := unitSpec(t)
	req, err := newRequest(spec, bakedImage("sha256:abc"), DefaultNetwork, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(req.host.Binds) != 0 || len(req.config.Volumes) != 0 {
		t.Errorf("request has binds %q or volumes %v; the driver mounts through HostConfig.Mounts only", req.host.Binds, req.config.Volumes)
	}
	if len(req.host.Mounts) == 0 {
		t.Fatal("request has no mounts")
	}
	for _, m := range req.host.Mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			t.Fatalf("mount source %s: %v", m.Source, err)
		}
		if !fi.IsDir() {
			t.Errorf("mount %s -> %s: source is %s, not a directory", m.Source, m.Target, fi.Mode().Type())
		}
	}

	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	linkToFile := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(file, linkToFile); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*driver.Spec)
	}{
		{"token dir is a file", func(s *driver.Spec) { s.TokenDir = file }},
		{"token dir is a symlink to a file", func(s *driver.Spec) { s.TokenDir = linkToFile }},
		{"socket dir is a file", func(s *driver.Spec) { s.SocketDir = file }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := unitSpec(t)
			tc.edit(&s)
			if _, err := newRequest(s, bakedImage("sha256:abc"), DefaultNetwork, ""); err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("newRequest = %v, want a refusal saying the source is not a directory", err)
			}
		})
	}
}

func TestRequestMountsBothDirectoriesReadOnlyAtTheirContractPaths(t *testing.T) {
	spec := unitSpec(t)
	req, err := newRequest(spec, bakedImage("sha256:abc"), DefaultNetwork, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []mount.Mount{
		{Type: mount.TypeBind, Source: spec.TokenDir, Target: "/run/sandkey/auth", ReadOnly: true},
		{Type: mount.TypeBind, Source: spec.SocketDir, Target: "/run/sandkey/gw", ReadOnly: true},
	}
	if !slices.Equal(req.host.Mounts, want) {
		t.Errorf("mounts = %+v, want %+v", req.host.Mounts, want)
	}
	if got := "unix://" + guest.SocketDir + "/" + guest.SocketName; got != guest.DefaultGateway {
		t.Errorf("socket mount target %s does not hold guest.DefaultGateway %s", guest.SocketDir, guest.DefaultGateway)
	}
}

func TestRequestCarriesContract(t *testing.T) {
	spec := unitSpec(t)
	spec.Env["SANDKEY_EXTRA"] = "x"
	spec.Env["sandkey_gateway"] = "unix:///elsewhere.sock"
	spec.Env[guest.EnvSandboxID] = "someone-else"
	spec.SandboxEnv[guest.EnvTokenDir] = "/host/path"                // the driver's value wins
	spec.SandboxEnv[guest.EnvStatusFile] = "/host/state/status.json" // and here
	req, err := newRequest(spec, bakedImage("sha256:abc"), DefaultNetwork, "")
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := []string{
		"FOO=bar",
		"SANDKEY_AUTH_MODE=dir",
		"SANDKEY_GATEWAY=unix:///run/sandkey/gw/gw.sock",
		"SANDKEY_INSTANCE_ID=inst1",
		"SANDKEY_SANDBOX_ID=sb1",
		"SANDKEY_STATUS_FILE=/run/sandkey/status.json",
		"SANDKEY_TOKEN_DIR=/run/sandkey/auth",
	}
	if !slices.Equal(req.config.Env, wantEnv) {
		t.Errorf("env = %q, want %q", req.config.Env, wantEnv)
	}
	if req.name != "sandkey-sb1" {
		t.Errorf("name = %q, want sandkey-sb1", req.name)
	}
	if req.config.Image != "sha256:abc" {
		t.Errorf("image = %q, want the image ID sha256:abc", req.config.Image)
	}
	if !slices.Equal(req.config.Cmd, spec.Command) || len(req.config.Entrypoint) != 0 {
		t.Errorf("cmd = %q, entrypoint = %q; want the spec's command after the image's entrypoint", req.config.Cmd, req.config.Entrypoint)
	}
	if req.host.NetworkMode != "none" {
		t.Errorf("network mode = %q, want none", req.host.NetworkMode)
	}
	for k, v := range map[string]string{
		LabelManaged: "true", LabelSandboxID: "sb1", LabelInstance: "inst1", LabelName: "one", LabelImage: "example/sandbox:1",
	} {
		if req.config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, req.config.Labels[k], v)
		}
	}
	if req.config.StopSignal != "SIGTERM" {
		t.Errorf("stop signal = %q, want SIGTERM", req.config.StopSignal)
	}
}

func TestSpecHashTellsWhenTheContainerMustBeMadeAnew(t *testing.T) {
	base := unitSpec(t)
	hash := func(spec driver.Spec, imageID string) string {
		t.Helper()
		req, err := newRequest(spec, bakedImage(imageID), DefaultNetwork, "")
		if err != nil {
			t.Fatal(err)
		}
		return req.config.Labels[LabelSpecHash]
	}
	h0 := hash(base, "sha256:abc")
	if h0 == "" || h0 != hash(base, "sha256:abc") {
		t.Fatalf("hash of the same spec differs or is empty: %q", h0)
	}
	for _, tc := range []struct {
		name    string
		edit    func(*driver.Spec)
		imageID string
	}{
		{"new instance", func(s *driver.Spec) { s.InstanceID = "inst2"; s.SandboxEnv[guest.EnvInstanceID] = "inst2" }, "sha256:abc"},
		{"image rebuilt under the same name", func(s *driver.Spec) {}, "sha256:def"},
		{"new command", func(s *driver.Spec) { s.Command = []string{"other"} }, "sha256:abc"},
		{"new user variable", func(s *driver.Spec) { s.Env["BAR"] = "1" }, "sha256:abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := unitSpec(t)
			s.TokenDir, s.SocketDir = base.TokenDir, base.SocketDir
			tc.edit(&s)
			if hash(s, tc.imageID) == h0 {
				t.Error("hash unchanged")
			}
		})
	}
}

func TestRequestRefusesInvalidSpec(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(*driver.Spec)
	}{
		{"empty ID", "cannot name a container", func(s *driver.Spec) { s.SandboxID = "" }},
		{"ID with a slash", "cannot name a container", func(s *driver.Spec) { s.SandboxID = "a/b" }},
		{"ID starting with a dot", "cannot name a container", func(s *driver.Spec) { s.SandboxID = ".a" }},
		{"no image", "no image", func(s *driver.Spec) { s.Image = "" }},
		{"relative token dir", "not an absolute path", func(s *driver.Spec) { s.TokenDir = "auth" }},
		{"missing socket dir", "socket directory /nonexistent/gw: directory does not exist", func(s *driver.Spec) { s.SocketDir = "/nonexistent/gw" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := unitSpec(t)
			tc.edit(&s)
			if _, err := newRequest(s, bakedImage("sha256:abc"), DefaultNetwork, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("newRequest = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestGraceRoundsUpToWholeSeconds(t *testing.T) {
	for _, tc := range []struct {
		grace time.Duration
		want  int
	}{
		{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {10 * time.Second, 10},
	} {
		if got := graceSeconds(tc.grace); got != tc.want {
			t.Errorf("graceSeconds(%s) = %d, want %d", tc.grace, got, tc.want)
		}
	}
}

func TestStatusOfInspectedContainer(t *testing.T) {
	labels := map[string]string{LabelInstance: "inst1"}
	for _, tc := range []struct {
		name  string
		state ctr.State
		want  driver.Status
	}{
		{"running", ctr.State{Status: ctr.StateRunning, Running: true, Pid: 42},
			driver.Status{State: driver.StateRunning, InstanceID: "inst1"}},
		{"paused counts as running", ctr.State{Status: ctr.StatePaused, Running: true, Paused: true},
			driver.Status{State: driver.StateRunning, InstanceID: "inst1"}},
		{"created, never started", ctr.State{Status: ctr.StateCreated},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1"}},
		{"created, start failed", ctr.State{Status: ctr.StateCreated, Error: "exec: /supervisor: no such file"},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1"}},
		{"being removed", ctr.State{Status: ctr.StateRemoving},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1"}},
		{"exited with a code", ctr.State{Status: ctr.StateExited, ExitCode: 3},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1", Exited: true, ExitCode: 3}},
		{"killed", ctr.State{Status: ctr.StateExited, ExitCode: 137},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1", Exited: true, ExitCode: 137}},
		{"dead", ctr.State{Status: ctr.StateDead, ExitCode: 1, Dead: true},
			driver.Status{State: driver.StateStopped, InstanceID: "inst1", Exited: true, ExitCode: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.state
			got := statusOf(ctr.InspectResponse{
				ContainerJSONBase: &ctr.ContainerJSONBase{ID: "0123456789abcdef", State: &st},
				Config:            &ctr.Config{Labels: labels},
			})
			if got.Detail == "" {
				t.Error("no detail")
			}
			got.Detail = ""
			if got != tc.want {
				t.Errorf("statusOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestStockImageRunsWhatDockerRunWouldUnderTheMountedSupervisor pins the
// container a sandbox gets from each kind of image: what `docker run
// IMAGE [COMMAND]` would run, with the supervisor in front as PID 1.
func TestStockImageRunsWhatDockerRunWouldUnderTheMountedSupervisor(t *testing.T) {
	const sup = "/usr/local/bin/supervisor"
	supMount := []mount.Mount{{Type: mount.TypeBind, Source: sup, Target: guest.SupervisorPath, ReadOnly: true}}
	for _, tc := range []struct {
		name    string
		img     image
		command []string
		want    entrypoint
	}{
		{"baked image, command given", image{entrypoint: []string{"/supervisor", "--"}, cmd: []string{"serve"}}, []string{"sh"},
			entrypoint{cmd: []string{"sh"}}},
		{"baked image, its CMD", image{entrypoint: []string{"/supervisor", "--"}, cmd: []string{"serve"}}, nil,
			entrypoint{}},
		{"baked image with its workload in the entrypoint", image{entrypoint: []string{"/supervisor", "--", "app"}}, nil,
			entrypoint{}},
		{"shell only image, command given", image{cmd: []string{"sh"}}, []string{"sleep", "9"},
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--"}, cmd: []string{"sleep", "9"}, user: "0:0", mounts: supMount}},
		{"shell only image, its CMD", image{cmd: []string{"sh"}}, nil,
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--"}, cmd: []string{"sh"}, user: "0:0", mounts: supMount}},
		{"ENTRYPOINT and CMD, no command", image{entrypoint: []string{"/app", "-v"}, cmd: []string{"--port", "80"}}, nil,
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--", "/app", "-v"}, cmd: []string{"--port", "80"}, user: "0:0", mounts: supMount}},
		{"ENTRYPOINT and CMD, command replaces the CMD", image{entrypoint: []string{"/app"}, cmd: []string{"--port", "80"}}, []string{"--port", "81"},
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--", "/app"}, cmd: []string{"--port", "81"}, user: "0:0", mounts: supMount}},
		{"ENTRYPOINT only", image{entrypoint: []string{"/app"}}, nil,
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--", "/app"}, user: "0:0", mounts: supMount}},
		{"USER passed to the supervisor, which stays root", image{cmd: []string{"sh"}, user: "app:staff"}, nil,
			entrypoint{entrypoint: []string{guest.SupervisorPath, "--user", "app:staff", "--"}, cmd: []string{"sh"}, user: "0:0", mounts: supMount}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := unitSpec(t)
			spec.Command = tc.command
			got, err := newEntrypoint(spec, tc.img, sup)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.entrypoint, tc.want.entrypoint) || !slices.Equal(got.cmd, tc.want.cmd) ||
				got.user != tc.want.user || !slices.Equal(got.mounts, tc.want.mounts) {
				t.Errorf("entrypoint = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestImageWithNothingToRunIsRefusedNamingTheImage(t *testing.T) {
	for _, tc := range []struct {
		name       string
		img        image
		supervisor string
		want       string
	}{
		{"stock image without ENTRYPOINT or CMD", image{}, "/sup", "has no ENTRYPOINT or CMD"},
		{"baked image without CMD", image{entrypoint: []string{"/supervisor", "--"}}, "/sup", "has no ENTRYPOINT or CMD"},
		{"stock image and no supervisor to mount", image{cmd: []string{"sh"}}, "", "no supervisor binary to mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := unitSpec(t)
			spec.Command = nil
			_, err := newRequest(spec, tc.img, DefaultNetwork, tc.supervisor)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"`+spec.Image+`"`) {
				t.Errorf("newRequest = %v; want an error naming image %q and saying %q", err, spec.Image, tc.want)
			}
		})
	}
}

func TestCheckStaticRefusesWhatCannotRunInAnyImage(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"relative/supervisor", "not an absolute path"},
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not an executable file"},
		{script, "not an ELF executable"},
		{"/bin/sh", "dynamically linked"}, // Debian's dash
	} {
		if err := CheckStatic(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckStatic(%s) = %v, want an error saying %q", tc.path, err, tc.want)
		}
	}
}
