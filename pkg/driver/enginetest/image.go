package enginetest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// buildTimeout bounds one image build or one go build.
const buildTimeout = 5 * time.Minute

// StandInPackage is the stand-in supervisor's import path.
const StandInPackage = "github.com/sandkey/sandkey/pkg/driver/enginetest/standin"

// StandInDockerfile is the Dockerfile of the stand-in image: the binary as
// /supervisor and the entrypoint contract of sandkey images, so that a
// container's command reaches it as `/supervisor -- <command...>`.
const StandInDockerfile = `FROM scratch
COPY supervisor /supervisor
ENTRYPOINT ["/supervisor", "--"]
`

// BuildStandIn compiles the stand-in supervisor into dir as a static binary
// (CGO_ENABLED=0, so it runs in a FROM scratch image) and returns its path.
func BuildStandIn(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "supervisor")
	if err := BuildStatic(StandInPackage, out); err != nil {
		t.Fatalf("build stand-in supervisor: %v", err)
	}
	return out
}

// BuildStatic compiles the Go package pkg into out as a static binary
// (CGO_ENABLED=0), one that runs in an image holding nothing else.
func BuildStatic(pkg, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, output)
	}
	return nil
}

// goTool is the go command on PATH; `go test` puts its toolchain's first.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // the error of running it says what is missing
}

// StandInImage builds the stand-in supervisor image, tagged tag, on the
// engine at sock, and returns the image's ID.
func StandInImage(t testing.TB, sock, tag string) string {
	t.Helper()
	dir := t.TempDir()
	BuildStandIn(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(StandInDockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return BuildImage(t, sock, tag, dir)
}

// BuildImage builds the image tagged tag on the engine at sock from dir,
// the build context, whose Dockerfile it follows; it never pulls a base
// image (FROM scratch needs none). It returns the image's ID.
func BuildImage(t testing.TB, sock, tag, dir string) string {
	t.Helper()
	id, err := buildImage(sock, tag, dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func buildImage(sock, tag, dir string) (string, error) {
	c, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithVersion(APIVersion))
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", tag, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteTar(pw, dir)) }()
	defer pr.Close() // ends the writer if the build stops reading
	resp, err := c.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		PullParent:  false,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("build image %s from %s: %w", tag, dir, err)
	}
	defer resp.Body.Close()
	if err := ReadBuildOutput(resp.Body); err != nil {
		return "", fmt.Errorf("build image %s from %s: %w", tag, dir, err)
	}
	img, err := c.ImageInspect(ctx, tag)
	if err != nil {
		return "", fmt.Errorf("build image %s: inspect the result: %w", tag, err)
	}
	return img.ID, nil
}

// ReadBuildOutput reads an image build's JSON message stream to its end and
// returns the error it reports, with the build's output for context.
func ReadBuildOutput(r io.Reader) error {
	var out strings.Builder
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		err := dec.Decode(&msg)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read build output: %w\n%s", err, out.String())
		}
		out.WriteString(msg.Stream)
		if msg.Error != "" || msg.ErrorDetail.Message != "" {
			return fmt.Errorf("%s%s\n%s", msg.Error, msg.ErrorDetail.Message, out.String())
		}
	}
}

// WriteTar writes the regular files, directories and symbolic links below
// dir to w as a tar archive, paths relative to dir, owned by root, with
// their modes: a build context, or an image layer (kubetest).
func WriteTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is neither a file, a directory nor a symbolic link", path)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("tar of %s: %w", dir, err)
	}
	return tw.Close()
}
