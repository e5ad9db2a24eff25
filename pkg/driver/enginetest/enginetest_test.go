package enginetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestEngineRunsStandInAndStopLeavesNothingBehind starts each engine,
// builds the stand-in image, leaves a container of it running, and checks
// that Stop removes every process, mount and file of the engine.
func TestEngineRunsStandInAndStopLeavesNothingBehind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		launch func() (*Engine, error)
	}{
		{"docker", LaunchDocker},
		{"podman", LaunchPodman},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			e, err := tc.launch()
			if err != nil {
				failOrSkip(t, err)
			}
			t.Logf("%s ready in %s", tc.name, time.Since(start).Round(time.Millisecond))
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					e.Stop()
				}
			})
			if len(e.Socket) >= 108 {
				t.Errorf("socket path %s is %d bytes, too long for a unix socket", e.Socket, len(e.Socket))
			}
			id := StandInImage(t, e.Socket, "sandkey-standin:harness")

			c, err := e.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			resp, err := c.ContainerCreate(ctx, &ctr.Config{Image: id, Cmd: []string{"serve"}},
				&ctr.HostConfig{NetworkMode: "none"}, nil, nil, "harness")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.ContainerStart(ctx, resp.ID, ctr.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			if info, err := c.ContainerInspect(ctx, resp.ID); err != nil || !info.State.Running {
				t.Fatalf("stand-in container not running: %v", err)
			}
			if len(ProcessesNaming(e.Dir())) == 0 {
				t.Fatalf("no process names %s while the engine runs; the leftover check proves nothing", e.Dir())
			}

			stopped = true
			if err := e.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if pids := ProcessesNaming(e.Dir()); len(pids) != 0 {
				t.Errorf("processes %v still name %s after Stop", pids, e.Dir())
			}
			if _, err := os.Stat(e.Dir()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("engine directory %s still there after Stop: %v", e.Dir(), err)
			}
			mounts, err := os.ReadFile("/proc/self/mountinfo")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(mounts), e.Dir()+"/") {
				t.Errorf("mounts below %s remain after Stop", e.Dir())
			}
		})
	}
}

func TestMissingEngineNamesItsPackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, tc := range []struct {
		name        string
		launch      func() (*Engine, error)
		wantBinary  string
		wantPackage string
	}{
		{"docker", LaunchDocker, "dockerd", "docker.io"},
		{"podman", LaunchPodman, "podman", "podman"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.launch()
			if err == nil {
				e.Stop()
				t.Fatal("launch succeeded with an empty PATH")
			}
			var missing *MissingError
			if !errors.As(err, &missing) || missing.Binary != tc.wantBinary || missing.Package != tc.wantPackage {
				t.Fatalf("launch = %v, want a MissingError for %s in package %s", err, tc.wantBinary, tc.wantPackage)
			}
			if !strings.Contains(err.Error(), "apt") && !strings.Contains(err.Error(), "engine-deps.sh") {
				t.Errorf("error %q does not say how to install", err)
			}
		})
	}
}

// verdictTB records whether failOrSkip skipped or failed; both end the
// goroutine, as they do on a real test.
type verdictTB struct {
	testing.TB
	skipped, failed bool
}

func (v *verdictTB) Helper()              {}
func (v *verdictTB) Skipf(string, ...any) { v.skipped = true; runtime.Goexit() }
func (v *verdictTB) Fatal(...any)         { v.failed = true; runtime.Goexit() }

func TestMissingEngineSkipsOnDeveloperMachinesAndFailsInCI(t *testing.T) {
	missing := &MissingError{Binary: "dockerd", Package: "docker.io"}
	for _, tc := range []struct {
		name     string
		ci       string
		err      error
		wantSkip bool
	}{
		{"missing engine on a developer machine", "", missing, true},
		{"missing engine in CI", "true", missing, false},
		{"engine failed to start", "", fmt.Errorf("launch docker: %w", errors.New("exited")), false},
		{"engine failed to start in CI", "true", errors.New("exited"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			v := &verdictTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				failOrSkip(v, tc.err)
			}()
			<-done
			if v.skipped != tc.wantSkip || v.failed == tc.wantSkip {
				t.Errorf("skipped=%v failed=%v, want skipped=%v", v.skipped, v.failed, tc.wantSkip)
			}
		})
	}
}

func TestSharedEngineNeverStartedStopsCleanly(t *testing.T) {
	s := NewShared(func() (*Engine, error) { return nil, errors.New("must not launch") })
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/a":             "/tmp/a",
		`/tmp/a\040b`:        "/tmp/a b",
		`/tmp/tab\011x\134y`: "/tmp/tab\tx\\y",
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
