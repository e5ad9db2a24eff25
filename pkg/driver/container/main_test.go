package container_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/container"
	"github.com/sandkey/sandkey/pkg/driver/docker"
	"github.com/sandkey/sandkey/pkg/driver/enginetest"
	"github.com/sandkey/sandkey/pkg/driver/podman"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/testmain"
)

// engine is one engine the tests run against: started once for the
// package, at the first test that needs it, with the stand-in supervisor
// image built into it once.
type engine struct {
	name   string
	shared *enginetest.Shared
	newDrv func(container.Config) (*container.Driver, error)

	imageOnce sync.Once
	imageOK   bool
}

// standInImage is the tag of the stand-in supervisor image in each engine.
const standInImage = "sandkey-standin:test"

var engines = []*engine{
	{name: docker.Name, shared: enginetest.NewShared(enginetest.LaunchDocker), newDrv: docker.New},
	{name: podman.Name, shared: enginetest.NewShared(enginetest.LaunchPodman), newDrv: podman.New},
}

func TestMain(m *testing.M) {
	testmain.Run(m, func() error {
		var errs []error
		for _, e := range engines {
			if err := e.shared.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", e.name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// forEachEngine runs test as a subtest per engine.
func forEachEngine(t *testing.T, test func(t *testing.T, e *engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { test(t, e) })
	}
}

// socket starts the engine if needed, builds the stand-in image into it
// once, and returns the engine's socket.
func (e *engine) socket(t testing.TB) string {
	t.Helper()
	sock := e.shared.Socket(t)
	e.imageOnce.Do(func() {
		start := time.Now()
		enginetest.StandInImage(t, sock, standInImage)
		e.imageOK = true
		t.Logf("%s: stand-in image built in %s", e.name, time.Since(start).Round(time.Millisecond))
	})
	if !e.imageOK {
		t.Fatalf("%s: the stand-in image failed to build in an earlier test", e.name)
	}
	return sock
}

// driver returns a new driver of the engine, closed when t ends.
func (e *engine) driver(t testing.TB) *container.Driver {
	t.Helper()
	d, err := e.newDrv(container.Config{Host: "unix://" + e.socket(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// client returns a raw client of the engine, closed when t ends.
func (e *engine) client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost("unix://"+e.socket(t)), client.WithVersion(container.APIVersion))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sandbox is a spec with its host side: the token directory's writer.
type sandbox struct {
	driver.Spec
	tokens *tokendir.Writer
}

// newSandbox returns a spec for a new sandbox running the stand-in with
// args, its token directory holding the token "tok-1", and its socket
// directory short enough for a unix socket.
func newSandbox(t testing.TB, args ...string) sandbox {
	t.Helper()
	id := "t" + randid.New(6)
	root := t.TempDir()
	w, err := tokendir.NewWriter(root + "/auth")
	if err != nil {
		t.Fatal(err)
	}
	writeToken(t, w, "tok-1")
	socketDir, err := os.MkdirTemp("", "sks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(socketDir) })
	stateDir := root + "/state"
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if len(args) == 0 {
		args = []string{"serve"}
	}
	return sandbox{
		Spec: driver.Spec{
			SandboxID:  id,
			Name:       "name-" + id,
			InstanceID: "i-" + randid.New(4),
			Image:      standInImage,
			Command:    args,
			Env:        map[string]string{},
			SandboxEnv: map[string]string{
				guest.EnvAuthMode:   "dir",
				guest.EnvSandboxID:  id,
				guest.EnvInstanceID: "", // set by spec()
			},
			TokenDir:  w.Dir(),
			SocketDir: socketDir,
			StateDir:  stateDir,
		},
		tokens: w,
	}
}

// spec returns the driver spec, its SANDKEY_INSTANCE_ID the spec's.
func (s sandbox) spec() driver.Spec {
	spec := s.Spec
	spec.SandboxEnv = make(map[string]string, len(s.SandboxEnv))
	for k, v := range s.SandboxEnv {
		spec.SandboxEnv[k] = v
	}
	spec.SandboxEnv[guest.EnvInstanceID] = spec.InstanceID
	return spec
}

func writeToken(t testing.TB, w *tokendir.Writer, token string) {
	t.Helper()
	if err := w.Write(map[string][]byte{tokendir.TokenFile: []byte(token), tokendir.JWKSFile: []byte(`{"keys":[]}`)}); err != nil {
		t.Fatal(err)
	}
}

// ctxT is a context for one driver or engine call.
func ctxT(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// deleteAtEnd deletes the sandbox when t ends.
func deleteAtEnd(t testing.TB, d driver.Driver, id string) {
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Delete(c, id); err != nil {
			t.Errorf("cleanup: delete %s: %v", id, err)
		}
	})
}

// waitState polls the driver until the sandbox is in state want.
func waitState(t testing.TB, d driver.Driver, id string, want driver.State) driver.Status {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := d.Status(ctxT(t), id)
		if err != nil {
			t.Fatalf("status %s: %v", id, err)
		}
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s not %s after a minute: %+v", id, want, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logPoll is how often waitLog reads a container's logs again.
const logPoll = 20 * time.Millisecond

// waitLog reads the container's stdout until a line starts with prefix,
// and returns the rest of that line.
func waitLog(t testing.TB, c *client.Client, name, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var out bytes.Buffer
	for {
		out.Reset()
		if rest, ok := findLine(t, c, name, prefix, &out); ok {
			return rest
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line %q in the logs of %s after 30s; stdout:\n%s", prefix, name, out.String())
		}
		time.Sleep(logPoll)
	}
}

func findLine(t testing.TB, c *client.Client, name, prefix string, out *bytes.Buffer) (string, bool) {
	t.Helper()
	rc, err := c.ContainerLogs(ctxT(t), name, ctr.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	defer rc.Close()
	var stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(out, &stderr, rc); err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// standInReport is the stand-in's first line of output.
type standInReport struct {
	Args          []string `json:"args"`
	Env           []string `json:"env"`
	PID           int      `json:"pid"`
	TokenDirWrite string   `json:"token_dir_write"`
	Interfaces    []string `json:"interfaces"`
	Gateway       string   `json:"gateway"`
}

func readReport(t testing.TB, c *client.Client, name string) standInReport {
	t.Helper()
	var r standInReport
	if err := json.Unmarshal([]byte(waitLog(t, c, name, "standin report ")), &r); err != nil {
		t.Fatalf("report of %s: %v", name, err)
	}
	return r
}
