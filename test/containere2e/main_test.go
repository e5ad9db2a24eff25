package containere2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"

	"github.com/sandkey/sandkey/pkg/driver/container"
	"github.com/sandkey/sandkey/pkg/driver/docker"
	"github.com/sandkey/sandkey/pkg/driver/enginetest"
	"github.com/sandkey/sandkey/pkg/driver/podman"
	"github.com/sandkey/sandkey/pkg/testmain"
)

const (
	// baseImage is the tag images/build.sh gives the base image, and the
	// one the test image's FROM names.
	baseImage = "sandkey-base:latest"
	// testImage is the base image plus busybox.
	testImage = "sandkey-e2e:test"
	// stockImage is busybox alone, FROM scratch: no sandkey layer, a
	// shell as its CMD, as images users bring have.
	stockImage = "sandkey-e2e-stock:test"
	// entrypointImage is stockImage with an ENTRYPOINT and a CMD: the
	// entrypoint records what it was given and sleeps.
	entrypointImage = "sandkey-e2e-entrypoint:test"
	// userImage is stockImage with a passwd and group file, a USER and
	// its home as the working directory.
	userImage = "sandkey-e2e-user:test"
	// baseContainerfile is the base image's Containerfile, from this
	// package's directory (where go test runs).
	baseContainerfile = "../../images/base/Containerfile"
	// busyboxPath is where Debian's busybox-static installs its binary.
	busyboxPath = "/bin/busybox"
	// buildTimeout bounds one image build.
	buildTimeout = 5 * time.Minute
)

// busyboxApplets are linked to /bin/busybox in the test image.
var busyboxApplets = []string{"sh", "cat", "sleep", "echo", "touch", "rm", "mkdir", "ln", "ls", "true", "false", "test", "id"}

// The Containerfiles of the images without a sandkey layer.
const (
	stockContainerfile = `FROM scratch
COPY bin/ /bin/
ENV PATH=/bin
CMD ["sh"]
`
	entrypointContainerfile = `FROM ` + stockImage + `
ENTRYPOINT ["sh", "-c", "echo \"$0 $*\" > /ran; exec sleep 600"]
CMD ["from-cmd", "arg"]
`
	userContainerfile = `FROM ` + stockImage + `
COPY etc/ /etc/
COPY --chown=1000:1000 home/ /home/
ENV FROM_IMAGE=yes
USER app
WORKDIR /home/app
`
	userPasswd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
	userGroup  = "root:x:0:\napp:x:1000:\nextra:x:2000:other,app\n"
)

// supervisorBin is the real supervisor, built by TestMain.
var supervisorBin string

// engine is one engine the tests run against: started once for the
// package, at the first test that needs it, with both images built into it
// once.
type engine struct {
	name   string
	shared *enginetest.Shared
	newDrv func(container.Config) (*container.Driver, error)

	imageOnce sync.Once
	imageErr  error
}

var engines = []*engine{
	{name: docker.Name, shared: enginetest.NewShared(enginetest.LaunchDocker), newDrv: docker.New},
	{name: podman.Name, shared: enginetest.NewShared(enginetest.LaunchPodman), newDrv: podman.New},
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	supervisorBin = filepath.Join(dir, "supervisor")
	build := exec.Command("go", "build", "-trimpath", "-o", supervisorBin, "github.com/sandkey/sandkey/cmd/supervisor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build supervisor: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	testmain.Run(m, func() error {
		defer os.RemoveAll(dir)
		var errs []error
		for _, e := range engines {
			if err := e.shared.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", e.name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// forEachEngine runs test as a parallel subtest per engine: the engines
// are separate processes, and each subtest its own gateway.
func forEachEngine(t *testing.T, test func(t *testing.T, e *engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			test(t, e)
		})
	}
}

// socket starts the engine if needed, builds both images into it once, and
// returns the engine's API socket.
func (e *engine) socket(t testing.TB) string {
	t.Helper()
	requireBusybox(t)
	sock := e.shared.Socket(t)
	e.imageOnce.Do(func() {
		start := time.Now()
		e.imageErr = buildImages(sock)
		t.Logf("%s: images built in %s", e.name, time.Since(start).Round(time.Millisecond))
	})
	if e.imageErr != nil {
		t.Fatalf("%s: build images: %v", e.name, e.imageErr)
	}
	return sock
}

// requireBusybox skips t when a static busybox is not installed, or fails
// it under CI=true, where nothing may pass by skipping. Debian's dynamic
// busybox package installs the same path, but cannot run in a FROM scratch
// image.
func requireBusybox(t testing.TB) {
	t.Helper()
	if err := container.CheckStatic(busyboxPath); err != nil {
		testmain.SkipIfMissing(t, fmt.Errorf("%w: install the Debian package busybox-static (scripts/test-deps.sh installs it)", err), true)
	}
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

// buildImages builds the base image from images/base/Containerfile, the
// test image from it, and the images without a sandkey layer, on the
// engine at sock.
func buildImages(sock string) error {
	containerfile, err := os.ReadFile(baseContainerfile)
	if err != nil {
		return fmt.Errorf("read the base image's Containerfile: %w", err)
	}
	sup, err := os.ReadFile(supervisorBin)
	if err != nil {
		return err
	}
	if err := buildImage(sock, baseImage, []contextEntry{
		{name: "Containerfile", mode: 0o644, data: containerfile},
		{name: "supervisor", mode: 0o755, data: sup},
	}); err != nil {
		return err
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return err
	}
	entries := []contextEntry{
		{name: "Containerfile", mode: 0o644, data: []byte("FROM " + baseImage + "\nCOPY bin/ /bin/\n")},
		{name: "bin/", mode: 0o755},
		{name: "bin/busybox", mode: 0o755, data: bb},
	}
	for _, applet := range busyboxApplets {
		entries = append(entries, contextEntry{name: "bin/" + applet, link: "busybox"})
	}
	if err := buildImage(sock, testImage, entries); err != nil {
		return err
	}
	entries[0].data = []byte(stockContainerfile)
	if err := buildImage(sock, stockImage, entries); err != nil {
		return err
	}
	if err := buildImage(sock, entrypointImage, []contextEntry{
		{name: "Containerfile", mode: 0o644, data: []byte(entrypointContainerfile)},
	}); err != nil {
		return err
	}
	return buildImage(sock, userImage, []contextEntry{
		{name: "Containerfile", mode: 0o644, data: []byte(userContainerfile)},
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(userPasswd)},
		{name: "etc/group", mode: 0o644, data: []byte(userGroup)},
		{name: "home/", mode: 0o755},
		{name: "home/app/", mode: 0o755},
	})
}

// contextEntry is one entry of a build context: a directory (name ends
// with /), a symlink to link, or a file holding data.
type contextEntry struct {
	name string
	mode int64
	data []byte
	link string
}

// buildImage builds tag on the engine at sock from the entries, whose
// Containerfile it follows, with the classic builder and no pull. The
// context is made here rather than from a directory because the test image
// needs symlinks.
func buildImage(sock, tag string, entries []contextEntry) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(0, 0)}
		switch {
		case e.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.link, 0o777
		case strings.HasSuffix(e.name, "/"):
			hdr.Typeflag = tar.TypeDir
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("build image %s: context: %w", tag, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("build image %s: context: %w", tag, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("build image %s: context: %w", tag, err)
	}

	c, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithVersion(container.APIVersion))
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	resp, err := c.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Containerfile",
		Remove:      true,
		ForceRemove: true,
		PullParent:  false,
		NetworkMode: "none",
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	if err := enginetest.ReadBuildOutput(resp.Body); err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	if _, err := c.ImageInspect(ctx, tag); err != nil {
		return fmt.Errorf("build image %s: inspect the result: %w", tag, err)
	}
	return nil
}
