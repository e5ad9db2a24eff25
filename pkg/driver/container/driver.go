package container

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/sandboxlock"
)

// APIVersion is the Engine API version the driver speaks: the newest that
// Docker 20.10 accepts, and one that Podman serves.
const APIVersion = "1.41"

// DefaultNetwork is the network a sandbox gets: none. The supervisor
// reaches its gateway through the bind-mounted socket, so a sandbox needs
// no network at all.
const DefaultNetwork = "none"

var (
	// ErrAlreadyRunning is returned by Start for a sandbox whose container
	// runs: it holds another instance ID, which a silent success would hide.
	ErrAlreadyRunning = errors.New("sandbox already running")
	// ErrImageNotFound is matched by the error Create and Start return for
	// an image the engine does not hold. The driver never pulls.
	ErrImageNotFound = errors.New("image not found locally")
	// ErrNotManaged is returned for a container that has a sandbox's name
	// but not the labels of this driver: it is left alone.
	ErrNotManaged = errors.New("container not managed by sandkey")
)

// Engine is what sets one container engine apart from the others behind
// the same API.
type Engine struct {
	// Name is the driver's name: "docker" or "podman".
	Name string
	// DefaultHost is the engine's API address when Config.Host is empty.
	DefaultHost string
}

// Config configures a Driver.
type Config struct {
	// Host is the engine's API address, such as unix:///run/docker.sock;
	// Engine.DefaultHost when empty.
	Host string
	// Network is the network mode of every sandbox; DefaultNetwork ("none")
	// when empty.
	Network string
	// Supervisor is the host path of a static supervisor binary, which the
	// driver mounts read-only into every image that does not start one of
	// its own (see the package doc). New refuses a missing or dynamically
	// linked one. Empty: only images FROM sandkey-base can run.
	Supervisor string
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
}

// Driver runs each sandbox as a container of one engine.
type Driver struct {
	engine     Engine
	network    string
	supervisor string
	client     *client.Client
	log        *zap.Logger
	locks      sandboxlock.Set
}

var _ driver.Driver = (*Driver)(nil)

// New returns a driver for engine that talks to it at cfg.Host. It does not
// contact the engine: the first operation does. Close releases the
// client's connections.
func New(engine Engine, cfg Config) (*Driver, error) {
	if engine.Name == "" {
		return nil, errors.New("container driver: engine has no name")
	}
	if cfg.Supervisor != "" {
		if err := CheckStatic(cfg.Supervisor); err != nil {
			return nil, fmt.Errorf("%s driver: supervisor binary: %w", engine.Name, err)
		}
	}
	host := cfg.Host
	if host == "" {
		host = engine.DefaultHost
	}
	c, err := client.NewClientWithOpts(client.WithHost(host), client.WithVersion(APIVersion))
	if err != nil {
		return nil, fmt.Errorf("%s driver: engine address %q: %w", engine.Name, host, err)
	}
	d := &Driver{engine: engine, network: cfg.Network, supervisor: cfg.Supervisor, client: c, log: cfg.Logger}
	if d.network == "" {
		d.network = DefaultNetwork
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	return d, nil
}

// Close releases the client's connections. Containers keep running.
func (d *Driver) Close() error { return d.client.Close() }

// Name is the engine's name.
func (d *Driver) Name() string { return d.engine.Name }

// TokenDelivery is dir-bind: the token directory is bind-mounted read-only.
func (d *Driver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryDirBind }

// Create makes the sandbox's container without starting it. Idempotent: a
// container that already fits the spec is kept, a stopped one that does
// not is made anew, and a running one is left running (Start will refuse
// it). Before the sandbox's first start its token and socket directories
// may not exist yet (the gateway makes them when it mints the first token
// and opens the socket): Create then checks the spec and the image (it
// exists, and has something to run) only, and Start makes the container.
func (d *Driver) Create(ctx context.Context, spec driver.Spec) error {
	if err := checkSandboxID(spec.SandboxID); err != nil {
		return fmt.Errorf("create sandbox %q: %w", spec.SandboxID, err)
	}
	defer d.locks.Lock(spec.SandboxID)()
	req, err := d.prepare(ctx, spec)
	if errors.Is(err, errDirMissing) {
		img, err := d.image(ctx, spec.Image)
		if err == nil {
			_, err = newEntrypoint(spec, img, d.supervisor)
		}
		if err != nil {
			return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
		}
		d.log.Debug("sandbox directories not there yet; the container is made at start",
			zap.String("engine", d.engine.Name), zap.String("sandbox_id", spec.SandboxID), zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	}
	existing, found, err := d.inspect(ctx, spec.SandboxID)
	switch {
	case err != nil:
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	case !found:
	case existing.State.Running:
		return nil
	case existing.Config.Labels[LabelSpecHash] == req.config.Labels[LabelSpecHash]:
		return nil
	default:
		if err := d.replace(ctx, existing); err != nil {
			return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
		}
	}
	if err := d.create(ctx, req); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	}
	return nil
}

// Start runs the sandbox's container. The container is the one Create
// made when it still fits the spec; otherwise (a new instance ID, a new
// image under the same name, any other change) the old one is removed and
// a new one made. Starting a running sandbox fails with ErrAlreadyRunning.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) error {
	if err := checkSandboxID(spec.SandboxID); err != nil {
		return fmt.Errorf("start sandbox %q: %w", spec.SandboxID, err)
	}
	defer d.locks.Lock(spec.SandboxID)()
	req, err := d.prepare(ctx, spec)
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
	}
	existing, found, err := d.inspect(ctx, spec.SandboxID)
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
	}
	if found && existing.State.Running {
		return fmt.Errorf("start sandbox %s: %w (container %s, instance %s)",
			spec.SandboxID, ErrAlreadyRunning, short(existing.ID), existing.Config.Labels[LabelInstance])
	}
	if found && existing.Config.Labels[LabelSpecHash] != req.config.Labels[LabelSpecHash] {
		if err := d.replace(ctx, existing); err != nil {
			return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
		}
		found = false
	}
	if !found {
		if err := d.create(ctx, req); err != nil {
			return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
		}
	}
	if err := d.client.ContainerStart(ctx, req.name, ctr.StartOptions{}); err != nil {
		return fmt.Errorf("start sandbox %s: start container %s: %w", spec.SandboxID, req.name, err)
	}
	d.log.Info("sandbox started", zap.String("engine", d.engine.Name), zap.String("sandbox_id", spec.SandboxID),
		zap.String("instance_id", spec.InstanceID), zap.String("container", req.name))
	return nil
}

// Stop sends SIGTERM to the container's PID 1 (the supervisor), and
// SIGKILL after grace, rounded up to whole seconds: the engine counts in
// seconds. The stopped container stays, with its exit code and logs, until
// Delete or a Start with a changed spec. Stopping a stopped sandbox does
// nothing; an unknown one yields driver.ErrNotFound.
func (d *Driver) Stop(ctx context.Context, sandboxID string, grace time.Duration) error {
	if err := checkSandboxID(sandboxID); err != nil {
		return fmt.Errorf("stop sandbox %q: %w", sandboxID, err)
	}
	defer d.locks.Lock(sandboxID)()
	existing, found, err := d.inspect(ctx, sandboxID)
	switch {
	case err != nil:
		return fmt.Errorf("stop sandbox %s: %w", sandboxID, err)
	case !found:
		return fmt.Errorf("stop sandbox %s: %w", sandboxID, driver.ErrNotFound)
	case !existing.State.Running:
		return nil
	}
	timeout := graceSeconds(grace)
	d.log.Info("stopping sandbox", zap.String("engine", d.engine.Name), zap.String("sandbox_id", sandboxID),
		zap.Int("grace_seconds", timeout))
	if err := d.client.ContainerStop(ctx, existing.ID, ctr.StopOptions{Timeout: &timeout}); err != nil {
		return fmt.Errorf("stop sandbox %s: stop container %s: %w", sandboxID, short(existing.ID), err)
	}
	return nil
}

// graceSeconds rounds grace up to whole seconds, never below zero.
func graceSeconds(grace time.Duration) int {
	if grace <= 0 {
		return 0
	}
	return int((grace + time.Second - 1) / time.Second)
}

// Delete removes the sandbox's container, killing it if it runs, and its
// anonymous volumes. The host directories are the gateway's to remove.
// Idempotent.
func (d *Driver) Delete(ctx context.Context, sandboxID string) error {
	if err := checkSandboxID(sandboxID); err != nil {
		return fmt.Errorf("delete sandbox %q: %w", sandboxID, err)
	}
	defer d.locks.Lock(sandboxID)()
	existing, found, err := d.inspect(ctx, sandboxID)
	switch {
	case err != nil:
		return fmt.Errorf("delete sandbox %s: %w", sandboxID, err)
	case !found:
		return nil
	}
	if err := d.remove(ctx, existing); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", sandboxID, err)
	}
	d.log.Info("sandbox deleted", zap.String("engine", d.engine.Name), zap.String("sandbox_id", sandboxID))
	return nil
}

// Status reports the state of the sandbox's container: running (paused
// and restarting count as running), stopped with its exit code once it
// ran, or missing when there is no container.
func (d *Driver) Status(ctx context.Context, sandboxID string) (driver.Status, error) {
	if err := checkSandboxID(sandboxID); err != nil {
		return driver.Status{}, fmt.Errorf("status of sandbox %q: %w", sandboxID, err)
	}
	existing, found, err := d.inspect(ctx, sandboxID)
	if err != nil {
		return driver.Status{}, fmt.Errorf("status of sandbox %s: %w", sandboxID, err)
	}
	if !found {
		return driver.Status{State: driver.StateMissing}, nil
	}
	return statusOf(existing), nil
}

// Sandbox is one of the driver's containers, as List finds it.
type Sandbox struct {
	SandboxID   string
	InstanceID  string
	ContainerID string
	State       driver.State
}

// List returns every container of the engine that carries the driver's
// labels, running or not: what a gateway that lost its store would need
// to find them.
func (d *Driver) List(ctx context.Context) ([]Sandbox, error) {
	cs, err := d.client.ContainerList(ctx, ctr.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelManaged+"=true")),
	})
	if err != nil {
		return nil, fmt.Errorf("list %s containers: %w", d.engine.Name, err)
	}
	out := make([]Sandbox, 0, len(cs))
	for _, c := range cs {
		st := driver.StateStopped
		switch c.State {
		case ctr.StateRunning, ctr.StatePaused, ctr.StateRestarting:
			st = driver.StateRunning
		}
		out = append(out, Sandbox{
			SandboxID:   c.Labels[LabelSandboxID],
			InstanceID:  c.Labels[LabelInstance],
			ContainerID: c.ID,
			State:       st,
		})
	}
	return out, nil
}

// prepare looks the spec's image up in the engine, never pulling it, and
// builds the container request from the image's ID and configuration.
func (d *Driver) prepare(ctx context.Context, spec driver.Spec) (request, error) {
	// Check the spec before the engine is asked anything.
	if spec.Image == "" {
		return request{}, errors.New("no image in the spec")
	}
	if _, err := mounts(spec); err != nil {
		return request{}, err
	}
	img, err := d.image(ctx, spec.Image)
	if err != nil {
		return request{}, err
	}
	return newRequest(spec, img, d.network, d.supervisor)
}

// image looks name up in the engine, never pulling it.
func (d *Driver) image(ctx context.Context, name string) (image, error) {
	info, err := d.client.ImageInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return image{}, imageNotFoundError{engine: d.engine.Name, image: name}
	}
	if err != nil {
		return image{}, fmt.Errorf("inspect image %q: %w", name, err)
	}
	img := image{id: info.ID}
	if c := info.Config; c != nil {
		img.entrypoint, img.cmd, img.user = c.Entrypoint, c.Cmd, c.User
	}
	return img, nil
}

// imageNotFoundError says which image is missing and what to do.
type imageNotFoundError struct{ engine, image string }

func (e imageNotFoundError) Error() string {
	return fmt.Sprintf("image %q not found locally in %s; build it with `make images` or load it (sandkey never pulls images)",
		e.image, e.engine)
}

func (e imageNotFoundError) Is(target error) bool { return target == ErrImageNotFound }

// inspect returns the sandbox's container; found is false when there is
// none. A container of that name without the driver's labels is an
// ErrNotManaged error.
func (d *Driver) inspect(ctx context.Context, sandboxID string) (c ctr.InspectResponse, found bool, err error) {
	name := containerName(sandboxID)
	c, err = d.client.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("inspect container %s: %w", name, err)
	}
	if c.Config == nil || c.State == nil ||
		c.Config.Labels[LabelManaged] != "true" || c.Config.Labels[LabelSandboxID] != sandboxID {
		return c, false, fmt.Errorf("container %s (%s): %w; remove or rename it", name, short(c.ID), ErrNotManaged)
	}
	return c, true, nil
}

func (d *Driver) create(ctx context.Context, req request) error {
	resp, err := d.client.ContainerCreate(ctx, req.config, req.host, nil, nil, req.name)
	if err != nil {
		return fmt.Errorf("create container %s: %w", req.name, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("engine warning on container create", zap.String("engine", d.engine.Name),
			zap.String("container", req.name), zap.String("warning", w))
	}
	return nil
}

// replace removes c, a stopped container that no longer fits its
// sandbox's spec, before a new one is made.
func (d *Driver) replace(ctx context.Context, c ctr.InspectResponse) error {
	d.log.Info("replacing sandbox container: its spec changed", zap.String("engine", d.engine.Name),
		zap.String("sandbox_id", c.Config.Labels[LabelSandboxID]), zap.String("container", short(c.ID)),
		zap.String("old_instance_id", c.Config.Labels[LabelInstance]))
	return d.remove(ctx, c)
}

// remove removes c, and its anonymous volumes. A running container is
// killed at once (both engines send SIGKILL on a forced remove). A
// container already gone is not an error.
func (d *Driver) remove(ctx context.Context, c ctr.InspectResponse) error {
	err := d.client.ContainerRemove(ctx, c.ID, ctr.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", short(c.ID), err)
	}
	return nil
}

// statusOf reads a driver status from an inspected container.
func statusOf(c ctr.InspectResponse) driver.Status {
	s := c.State
	st := driver.Status{InstanceID: c.Config.Labels[LabelInstance]}
	switch {
	case s.Running || s.Paused || s.Restarting:
		st.State = driver.StateRunning
		st.Detail = fmt.Sprintf("container %s %s, pid %d, since %s", short(c.ID), s.Status, s.Pid, s.StartedAt)
	case s.Status == ctr.StateExited || s.Status == ctr.StateDead || s.Status == "stopped":
		st.State = driver.StateStopped
		st.Exited, st.ExitCode = true, s.ExitCode
		st.Detail = fmt.Sprintf("container %s exited with code %d at %s", short(c.ID), s.ExitCode, s.FinishedAt)
		if s.OOMKilled {
			st.Detail += " (killed: out of memory)"
		}
		if s.Error != "" {
			st.Detail += ": " + s.Error
		}
	case s.Status == ctr.StateCreated && s.Error != "":
		st.State = driver.StateStopped
		st.Detail = fmt.Sprintf("container %s created; its start failed: %s", short(c.ID), s.Error)
	case s.Status == ctr.StateCreated:
		st.State = driver.StateStopped
		st.Detail = fmt.Sprintf("container %s created, never started", short(c.ID))
	default:
		st.State = driver.StateStopped
		st.Detail = fmt.Sprintf("container %s %s", short(c.ID), s.Status)
	}
	return st
}

// short abbreviates a container ID the way engines print it.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
