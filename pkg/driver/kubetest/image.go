package kubetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
)

// PauseImage is the node's sandbox image, built from package pause and
// imported at start (containerd's sandbox_image).
const PauseImage = "sandkey.local/kubetest-pause:1"

// PausePackage is the pause program's import path.
const PausePackage = "github.com/sandkey/sandkey/pkg/driver/kubetest/pause"

// imageTimeout bounds one image build or import.
const imageTimeout = 5 * time.Minute

// ImportImage builds an image named ref whose one layer holds the files
// below layerDir (paths relative to it, modes kept, owned by root) and
// whose entrypoint is entrypoint, and imports it into the node's
// containerd, where pods find it with imagePullPolicy: Never. Name it
// fully (registry/name:tag, e.g. sandkey.local/x:1) so that the name the
// kubelet asks for is the one imported.
func (c *Cluster) ImportImage(t testing.TB, ref, layerDir string, entrypoint []string) {
	t.Helper()
	if c.node == nil {
		t.Fatal("ImportImage: the cluster has no node; start it with Options{Kubelet: true}")
	}
	if err := c.node.importImage(ref, layerDir, entrypoint); err != nil {
		t.Fatal(err)
	}
}

// importImage writes the image as a docker-archive tarball in the scratch
// tree and imports it with ctr into the k8s.io namespace, the CRI's.
func (n *node) importImage(ref, layerDir string, entrypoint []string) error {
	archive, err := os.CreateTemp(n.c.path(), "image-*.tar")
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	defer os.Remove(archive.Name())
	err = writeDockerArchive(archive, ref, layerDir, entrypoint)
	if cerr := archive.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("import image %s from %s: %w", ref, layerDir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), imageTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.c.bin.ctr, "--address", n.socket(), "--namespace", "k8s.io",
		"images", "import", archive.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import image %s: ctr images import: %w\n%s", ref, err, out)
	}
	return nil
}

// writeDockerArchive writes to w the `docker save` form of a one-layer
// image: the layer tarball, the image config and manifest.json, which
// names the image ref.
func writeDockerArchive(w io.Writer, ref, layerDir string, entrypoint []string) error {
	var layer bytes.Buffer
	if err := enginetest.WriteTar(&layer, layerDir); err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerDigest := hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": entrypoint,
			"Env":        []string{"PATH=/usr/local/bin:/usr/bin:/bin:/"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerDigest}},
		"history": []map[string]string{{"created_by": "kubetest.ImportImage"}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := layerDigest + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{ref},
		"Layers":   []string{layerName},
	}})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{layerName, layer.Bytes()},
		{configName, config},
		{"manifest.json", manifest},
	} {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}
