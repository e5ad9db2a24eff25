package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
)

// rootUser is the container's user when the driver mounts the supervisor:
// PID 1 must be root to read the token directory and to drop to the
// image's user for the workload. Numeric, so no /etc/passwd is needed.
const rootUser = "0:0"

// The labels every container of the driver carries.
const (
	LabelManaged   = "io.sandkey.managed"     // "true"
	LabelSandboxID = "io.sandkey.sandbox-id"  // the sandbox's ID
	LabelInstance  = "io.sandkey.instance-id" // the instance of the start the container was made for
	LabelName      = "io.sandkey.name"        // the sandbox's name, for operators
	LabelImage     = "io.sandkey.image"       // the image as the spec named it (the container names its ID)
	LabelSpecHash  = "io.sandkey.spec-hash"   // see specHash
)

// ContainerPrefix starts the name of every container of the driver:
// sandkey-<sandbox id>.
const ContainerPrefix = "sandkey-"

// stopSignal is what Stop sends first, whatever STOPSIGNAL the image sets:
// the supervisor forwards SIGTERM to its workload.
const stopSignal = "SIGTERM"

// sandboxIDPattern is what an engine accepts in a container name after
// the prefix.
var sandboxIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,199}$`)

// checkSandboxID accepts an ID that can name a container.
func checkSandboxID(id string) error {
	if !sandboxIDPattern.MatchString(id) {
		return fmt.Errorf("sandbox ID %q cannot name a container: want letters, digits, '_', '.', '-', starting with a letter or digit, at most 200", id)
	}
	return nil
}

// containerName is the name of sandbox id's container.
func containerName(id string) string { return ContainerPrefix + id }

// request is everything ContainerCreate gets for one sandbox.
type request struct {
	name   string
	config *ctr.Config
	host   *ctr.HostConfig
}

// image is what the driver needs of an image's configuration, as the
// engine reports it.
type image struct {
	id         string
	entrypoint []string
	cmd        []string
	user       string
}

// newRequest builds the container for spec from img. It checks the spec's
// host directories: each must be a directory, never a single file (see the
// package doc). supervisor is the host's supervisor binary, mounted into
// an image that has no supervisor of its own; empty refuses such images.
func newRequest(spec driver.Spec, img image, network, supervisor string) (request, error) {
	if err := checkSandboxID(spec.SandboxID); err != nil {
		return request{}, err
	}
	if spec.Image == "" {
		return request{}, errors.New("no image in the spec")
	}
	ms, err := mounts(spec)
	if err != nil {
		return request{}, err
	}
	run, err := newEntrypoint(spec, img, supervisor)
	if err != nil {
		return request{}, err
	}
	ms = append(ms, run.mounts...)
	cfg := &ctr.Config{
		Image:      img.id,
		Entrypoint: run.entrypoint,
		Cmd:        run.cmd,
		User:       run.user,
		Env:        environ(spec),
		StopSignal: stopSignal,
		Labels: map[string]string{
			LabelManaged:   "true",
			LabelSandboxID: spec.SandboxID,
			LabelInstance:  spec.InstanceID,
			LabelName:      spec.Name,
			LabelImage:     spec.Image,
		},
	}
	host := &ctr.HostConfig{
		NetworkMode: ctr.NetworkMode(network),
		Mounts:      ms,
		// No restart policy: the gateway decides when a sandbox runs.
		RestartPolicy: ctr.RestartPolicy{Name: ctr.RestartPolicyDisabled},
	}
	hash, err := specHash(cfg, host)
	if err != nil {
		return request{}, err
	}
	cfg.Labels[LabelSpecHash] = hash
	return request{name: containerName(spec.SandboxID), config: cfg, host: host}, nil
}

// entrypoint is how a container starts its supervisor and workload.
type entrypoint struct {
	entrypoint []string // nil keeps the image's
	cmd        []string // nil keeps the image's when entrypoint is nil
	user       string   // empty keeps the image's
	mounts     []mount.Mount
}

// newEntrypoint runs what `docker run IMAGE [COMMAND]` would run, under the
// supervisor as PID 1:
//
//   - an image FROM sandkey-base (its entrypoint starts with
//     guest.BakedSupervisor) keeps its entrypoint, user and CMD; the spec's
//     command, when given, replaces the CMD;
//   - any other image gets the host's supervisor mounted read-only at
//     guest.SupervisorPath as its entrypoint, running as root, followed by the
//     image's user (--user), "--", the image's ENTRYPOINT and the spec's
//     command or else the image's CMD.
//
// An image with nothing to run (no entrypoint past the supervisor, no
// CMD, no command) is refused, naming the image.
func newEntrypoint(spec driver.Spec, img image, supervisor string) (entrypoint, error) {
	cmd := spec.Command
	if len(cmd) == 0 {
		cmd = img.cmd
	}
	if len(img.entrypoint) > 0 && img.entrypoint[0] == guest.BakedSupervisor {
		if last := img.entrypoint[len(img.entrypoint)-1]; len(cmd) == 0 && (len(img.entrypoint) == 1 || last == "--") {
			return entrypoint{}, noWorkloadError(spec.Image)
		}
		return entrypoint{cmd: spec.Command}, nil
	}
	if len(img.entrypoint) == 0 && len(cmd) == 0 {
		return entrypoint{}, noWorkloadError(spec.Image)
	}
	if supervisor == "" {
		return entrypoint{}, fmt.Errorf("image %q does not start the sandkey supervisor (its entrypoint is not %s) and the driver has no supervisor binary to mount into it: give the gateway one (--supervisor) or build the image FROM sandkey-base",
			spec.Image, guest.BakedSupervisor)
	}
	ep := []string{guest.SupervisorPath}
	if img.user != "" {
		ep = append(ep, "--user", img.user)
	}
	// With an entrypoint given, neither engine adds the image's CMD to an
	// empty one.
	ep = append(append(ep, "--"), img.entrypoint...)
	return entrypoint{
		entrypoint: ep,
		cmd:        cmd,
		user:       rootUser,
		mounts:     []mount.Mount{{Type: mount.TypeBind, Source: supervisor, Target: guest.SupervisorPath, ReadOnly: true}},
	}, nil
}

func noWorkloadError(image string) error {
	return fmt.Errorf("image %q has no ENTRYPOINT or CMD to run and the sandbox gives no command: give one (gateway sandbox create NAME --image %s -- CMD ARGS...)", image, image)
}

// mounts binds the token directory read-only at guest.DefaultTokenDir and the
// socket directory read-only at guest.SocketDir. Read-only does not keep
// the supervisor from connecting to the socket in it; it keeps the sandbox
// from planting files where the gateway listens.
func mounts(spec driver.Spec) ([]mount.Mount, error) {
	tokenDir, err := hostDir("token directory", spec.TokenDir)
	if err != nil {
		return nil, err
	}
	socketDir, err := hostDir("socket directory", spec.SocketDir)
	if err != nil {
		return nil, err
	}
	return []mount.Mount{
		{Type: mount.TypeBind, Source: tokenDir, Target: guest.DefaultTokenDir, ReadOnly: true},
		{Type: mount.TypeBind, Source: socketDir, Target: guest.SocketDir, ReadOnly: true},
	}, nil
}

// errDirMissing is matched by the error of a mount source that does not
// exist (yet): the gateway makes the token and socket directories at a
// sandbox's first start, after Create.
var errDirMissing = errors.New("directory does not exist")

// hostDir checks that path is an absolute path to a directory and returns
// it cleaned. A single file is refused: a bind mount of a file pins its
// inode and goes stale after the first rename over it. A missing path is
// an errDirMissing error.
func hostDir(what, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s %q is not an absolute path", what, path)
	}
	path = filepath.Clean(path)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s %s: %w", what, path, errDirMissing)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %s is not a directory; the driver bind-mounts directories only, never a single file", what, path)
	}
	return path, nil
}

// environ builds the container's environment: the user's variables
// (SANDKEY_* stripped), the gateway's SANDKEY_* variables, and the three
// paths only the driver knows, which win over SandboxEnv. The engine adds
// the image's variables (PATH and the like) under these.
func environ(spec driver.Spec) []string {
	sandbox := make(map[string]string, len(spec.SandboxEnv)+3)
	for k, v := range spec.SandboxEnv {
		sandbox[k] = v
	}
	sandbox[guest.EnvTokenDir] = guest.DefaultTokenDir
	sandbox[guest.EnvGateway] = guest.DefaultGateway
	sandbox[guest.EnvStatusFile] = guest.StatusFile
	return driver.Environ(spec.Env, sandbox)
}

// specHash digests everything the container is made of, the image ID
// included, so that Start can tell whether the existing container still
// fits the spec or must be made anew. encoding/json sorts map keys, so the
// digest is stable.
func specHash(cfg *ctr.Config, host *ctr.HostConfig) (string, error) {
	data, err := json.Marshal(struct {
		Config *ctr.Config
		Host   *ctr.HostConfig
	}{cfg, host})
	if err != nil {
		return "", fmt.Errorf("digest container spec: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
