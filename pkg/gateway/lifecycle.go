package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store"
)

// Spec is what an operator asks for when creating a sandbox. It is stored
// as the sandbox's spec.
type Spec struct {
	Image   string            `json:"image,omitempty"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
}

// CreateRequest creates a sandbox.
type CreateRequest struct {
	Name   string
	Driver string // DefaultDriver when empty
	Spec   Spec
	Start  bool // start it right away
}

// State is where a sandbox is in its life.
type State string

// Sandbox states.
const (
	StateCreated  = State(store.SandboxCreated)
	StateRunning  = State(store.SandboxRunning)
	StateStopped  = State(store.SandboxStopped)
	StateVanished = State(store.SandboxVanished) // the driver no longer knows it
)

// Sandbox is a sandbox as operators see it: the store's row, its spec
// decoded, and whether its supervisor is connected now.
type Sandbox struct {
	ID         string
	Name       string
	Driver     string
	State      State
	InstanceID string // the driver's id of the current instance
	RunID      string // the backend's name of the current run ("" when it has none)

	LatestGen    uint64    // newest generation minted; 0 = none yet
	GenFloor     uint64    // newest generation seen signed that the store may not have issued
	WrittenGen   uint64    // newest generation written to the token directory
	DeliveredGen uint64    // newest generation the supervisor acknowledged
	RotateAt     time.Time // when LatestGen is due for rotation; zero = now

	CreatedAt time.Time
	UpdatedAt time.Time // last change of state, instance or spec

	Spec      Spec
	Connected bool
}

// ErrAlreadyRunning is returned when starting a running sandbox.
var ErrAlreadyRunning = errors.New("sandbox is already running")

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Create records a new sandbox and prepares it with its driver, and starts
// it when asked.
func (g *Gateway) Create(ctx context.Context, req CreateRequest) (_ Sandbox, err error) {
	defer outwardTo(&err)
	if !validName.MatchString(req.Name) {
		return Sandbox{}, fmt.Errorf("sandbox name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit: %w", req.Name, ErrInvalid)
	}
	// Every command takes an id or a name, the id first: a name of an id's
	// form could stand for another sandbox, or be shadowed by it.
	if store.IsSandboxID(req.Name) {
		return Sandbox{}, fmt.Errorf("sandbox name %q: 32 lower-case hex digits read as a sandbox id; choose a name of another form: %w", req.Name, ErrInvalid)
	}
	// With an image, an empty command runs the image's own (its CMD); the
	// driver refuses an image with nothing to run.
	if len(req.Spec.Command) == 0 && req.Spec.Image == "" {
		return Sandbox{}, fmt.Errorf("sandbox %q: no command to run, and no image whose own command could: %w", req.Name, ErrInvalid)
	}
	if req.Driver == "" {
		req.Driver = g.cfg.DefaultDriver
	}
	d, err := g.driverFor(req.Driver)
	if err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %q: %w: %w", req.Name, err, ErrInvalid)
	}
	req.Spec.Env = driver.StripReserved(req.Spec.Env)
	spec, err := json.Marshal(req.Spec)
	if err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %q: encode spec: %w", req.Name, err)
	}
	sb, err := g.store.CreateSandbox(ctx, store.NewSandbox{Name: req.Name, Driver: req.Driver, Spec: spec})
	if err != nil {
		return Sandbox{}, err
	}
	if err := os.MkdirAll(g.sandboxDir(sb.ID), 0o700); err != nil {
		return Sandbox{}, g.undoCreate(ctx, sb.ID, fmt.Errorf("create sandbox directory: %w", err))
	}
	if err := d.Create(ctx, g.driverSpec(sb, req.Spec, "")); err != nil {
		return Sandbox{}, g.undoCreate(ctx, sb.ID, fmt.Errorf("driver %s create: %w", req.Driver, err))
	}
	g.log.Info("sandbox created", zap.String("sandbox", sb.ID), zap.String("name", sb.Name), zap.String("driver", sb.Driver))
	if req.Start {
		return g.Start(ctx, sb.ID)
	}
	return g.Get(ctx, sb.ID)
}

func (g *Gateway) undoCreate(ctx context.Context, id string, cause error) error {
	if err := g.store.DeleteSandbox(ctx, id); err != nil {
		g.log.Error("undo sandbox create", zap.String("sandbox", id), zap.Error(err))
	}
	g.removeSandboxFiles(id)
	return cause
}

// resolve finds a sandbox by id or by name.
func (g *Gateway) resolve(ctx context.Context, idOrName string) (store.Sandbox, error) {
	sb, err := g.store.GetSandbox(ctx, idOrName)
	if errors.Is(err, store.ErrNotFound) {
		sb, err = g.store.GetSandboxByName(ctx, idOrName)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Sandbox{}, fmt.Errorf("sandbox %q: %w", idOrName, ErrNotFound)
	}
	return sb, err
}

// Get returns a sandbox by id or name.
func (g *Gateway) Get(ctx context.Context, idOrName string) (_ Sandbox, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return Sandbox{}, err
	}
	return g.view(sb)
}

// List returns every sandbox.
func (g *Gateway) List(ctx context.Context) (_ []Sandbox, err error) {
	defer outwardTo(&err)
	all, err := g.store.ListSandboxes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Sandbox, 0, len(all))
	for _, sb := range all {
		v, err := g.view(sb)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (g *Gateway) view(sb store.Sandbox) (Sandbox, error) {
	var spec Spec
	if err := json.Unmarshal(sb.Spec, &spec); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s: stored spec: %w", sb.ID, err)
	}
	return Sandbox{ID: sb.ID, Name: sb.Name, Driver: sb.Driver, State: State(sb.State),
		InstanceID: sb.InstanceID, RunID: sb.RunID,
		LatestGen: sb.LatestGen, GenFloor: sb.GenFloor, WrittenGen: sb.WrittenGen, DeliveredGen: sb.DeliveredGen,
		RotateAt: sb.RotateAt, CreatedAt: sb.CreatedAt, UpdatedAt: sb.UpdatedAt,
		Spec: spec, Connected: g.sessions.Connected(sb.ID)}, nil
}

// Start starts or resumes a sandbox: it mints a fresh generation and
// writes it into the token directory, opens the sandbox's gateway socket,
// and only then asks the driver to start it, so the sandbox never boots on
// an expired token.
func (g *Gateway) Start(ctx context.Context, idOrName string) (_ Sandbox, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return Sandbox{}, err
	}
	defer g.lock(sb.ID)()
	if sb, err = g.store.GetSandbox(ctx, sb.ID); err != nil { // re-read under the lock
		return Sandbox{}, err
	}
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return Sandbox{}, err
	}
	if st, err := d.Status(ctx, sb.ID); err == nil && st.State == driver.StateRunning {
		return Sandbox{}, fmt.Errorf("sandbox %s (%s): %w", sb.Name, sb.ID, ErrAlreadyRunning)
	}
	tok, err := g.mintOne(ctx, sb.ID, "start")
	if err != nil {
		return Sandbox{}, fmt.Errorf("start sandbox %s: %w", sb.Name, err)
	}
	_, err = g.sockets.AddSandbox(g.socketDir(sb.ID), sb.ID)
	g.fds.check(g.sockets.Len())
	if err != nil {
		return Sandbox{}, fmt.Errorf("start sandbox %s: %w", sb.Name, err)
	}
	var spec Spec
	if err := json.Unmarshal(sb.Spec, &spec); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s: stored spec: %w", sb.ID, err)
	}
	instance := randid.New(instanceIDBytes)
	if err := g.startRun(ctx, d, sb, g.driverSpec(sb, spec, instance)); err != nil {
		return Sandbox{}, fmt.Errorf("driver %s start sandbox %s: %w", sb.Driver, sb.Name, err)
	}
	if err := g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxRunning, instance); err != nil {
		return Sandbox{}, err
	}
	g.inotify.started(sb.ID, d)
	g.log.Info("sandbox started", zap.String("sandbox", sb.ID), zap.String("name", sb.Name),
		zap.String("instance", instance), zap.Uint64("gen", tok.Gen()), zap.String("jti", tok.JTI()))
	return g.Get(ctx, sb.ID)
}

// startRun asks the driver to start the sandbox; a driver that names its
// runs (a pod's UID) has the name recorded before the sandbox is marked
// running, so an exchange never sees a running sandbox without its run.
func (g *Gateway) startRun(ctx context.Context, d driver.Driver, sb store.Sandbox, spec driver.Spec) error {
	rs, ok := d.(driver.RunStarter)
	if !ok {
		return d.Start(ctx, spec)
	}
	run, err := rs.StartRun(ctx, spec)
	if err != nil {
		return err
	}
	return g.store.RecordRun(ctx, sb.ID, run)
}

// Stop stops a sandbox, keeping it for a later Start.
func (g *Gateway) Stop(ctx context.Context, idOrName string) (_ Sandbox, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return Sandbox{}, err
	}
	defer g.lock(sb.ID)()
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return Sandbox{}, err
	}
	if err := d.Stop(ctx, sb.ID, g.cfg.StopGrace); err != nil && !errors.Is(err, driver.ErrNotFound) {
		return Sandbox{}, fmt.Errorf("driver %s stop sandbox %s: %w", sb.Driver, sb.Name, err)
	}
	if err := g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxStopped, sb.InstanceID); err != nil {
		return Sandbox{}, err
	}
	g.sessions.Disconnect(sb.ID)
	g.inotify.ended(sb.ID)
	g.log.Info("sandbox stopped", zap.String("sandbox", sb.ID), zap.String("name", sb.Name))
	return g.Get(ctx, sb.ID)
}

// Delete removes a sandbox and revokes every token it ever had: its store
// rows go first, so from that moment no token of it authenticates.
func (g *Gateway) Delete(ctx context.Context, idOrName string) (err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return err
	}
	defer g.lock(sb.ID)()
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return err
	}
	if err := g.store.DeleteSandbox(ctx, sb.ID); err != nil {
		return err
	}
	g.forget(sb.ID)
	g.sessions.EndDeleted(sb.ID)
	g.inotify.ended(sb.ID)
	if err := g.sockets.RemoveSandbox(sb.ID); err != nil {
		g.log.Warn("close sandbox socket", zap.String("sandbox", sb.ID), zap.Error(err))
	}
	var errs []error
	// Stop first, with the operator's grace, so the workload ends the way
	// a stop ends it; Delete then only removes what is left.
	if err := d.Stop(ctx, sb.ID, g.cfg.StopGrace); err != nil && !errors.Is(err, driver.ErrNotFound) {
		errs = append(errs, fmt.Errorf("driver %s stop: %w", sb.Driver, err))
	}
	if err := d.Delete(ctx, sb.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
		errs = append(errs, fmt.Errorf("driver %s delete: %w", sb.Driver, err))
	}
	errs = append(errs, g.removeSandboxFiles(sb.ID))
	g.log.Info("sandbox deleted; its tokens are revoked", zap.String("sandbox", sb.ID), zap.String("name", sb.Name))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete sandbox %s: tokens revoked, but cleanup failed: %w", sb.Name, err)
	}
	return nil
}

// Rotate mints a new generation for a sandbox now and returns it. It
// fails only when the token reached the sandbox nowhere: neither its
// directory nor (when the directory write failed) its session; see
// RotateReport for what happened.
func (g *Gateway) Rotate(ctx context.Context, idOrName string) (_ uint64, err error) {
	defer outwardTo(&err)
	r, err := g.RotateReport(ctx, idOrName)
	return r.Gen, err
}

// deliveryWait bounds how long a manual rotation whose directory write
// failed waits for the supervisor to acknowledge the token over its
// session; an acknowledgement normally takes milliseconds.
const deliveryWait = 5 * time.Second

// RotateResult is what a manual rotation achieved.
type RotateResult struct {
	Gen       uint64
	Written   bool  // the token directory holds Gen
	WriteErr  error // why it does not; nil when Written
	Delivered bool  // the supervisor acknowledged Gen over its session
}

// RotateReport mints a new generation for a sandbox now. The generation
// is committed whatever happens next; the token is then written into the
// directory and pushed to the session. When the write fails, it waits up
// to deliveryWait for the supervisor to acknowledge the push: the sandbox
// holds the token then, and the result says so with the write's error.
// Only a token that reached the sandbox nowhere is an error.
func (g *Gateway) RotateReport(ctx context.Context, idOrName string) (_ RotateResult, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return RotateResult{}, err
	}
	// A stopped sandbox was not reconciled: its directory may hold a
	// generation a restored store forgot.
	g.floorFromDirLogged(ctx, sb)
	tokens, err := g.mint(ctx, []string{sb.ID}, "manual")
	if err != nil {
		return RotateResult{}, err
	}
	tok := tokens[sb.ID]
	if tok == nil {
		return RotateResult{}, fmt.Errorf("sandbox %s: %w", sb.ID, ErrNotFound) // deleted meanwhile
	}
	r := RotateResult{Gen: tok.Gen()}
	cur, err := g.store.GetSandbox(ctx, sb.ID)
	if err != nil {
		return r, err
	}
	if cur.WrittenGen >= r.Gen {
		r.Written = true
		return r, nil
	}
	// mint logged the failure; one more try gives its cause to the caller.
	if r.WriteErr = g.writeToken(sb.ID, tok); r.WriteErr == nil {
		r.Written = true
		if err := g.store.RecordWritten(ctx, sb.ID, r.Gen); err != nil {
			g.log.Warn("record written generation", zap.String("sandbox", sb.ID), zap.Uint64("gen", r.Gen), zap.Error(err))
		}
		return r, nil
	}
	r.Delivered = g.awaitDelivery(ctx, sb.ID, r.Gen)
	if !r.Delivered {
		return r, fmt.Errorf("sandbox %s: generation %d was minted but reached the sandbox nowhere: write token directory: %w; "+
			"no session acknowledged it (the supervisor gets it when it registers); check the gateway's log and the state directory's file system",
			sb.Name, r.Gen, r.WriteErr)
	}
	g.log.Warn("token directory write failed; the token reached the sandbox over its session", zap.String("sandbox", sb.ID),
		zap.Uint64("gen", r.Gen), zap.String("jti", tok.JTI()), zap.Error(r.WriteErr))
	return r, nil
}

// awaitDelivery waits up to deliveryWait for sandboxID's supervisor to
// acknowledge gen; without a session it does not wait.
func (g *Gateway) awaitDelivery(ctx context.Context, sandboxID string, gen uint64) bool {
	deadline := time.Now().Add(deliveryWait)
	for g.sessions.Connected(sandboxID) && time.Now().Before(deadline) && ctx.Err() == nil {
		sb, err := g.store.GetSandbox(ctx, sandboxID)
		if err == nil && sb.DeliveredGen >= gen {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	sb, err := g.store.GetSandbox(ctx, sandboxID)
	return err == nil && sb.DeliveredGen >= gen
}

// Exec runs a command in a running sandbox through its supervisor,
// streaming its output to req.Stdout and req.Stderr.
func (g *Gateway) Exec(ctx context.Context, idOrName string, req session.ExecRequest) (_ session.ExecResult, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return session.ExecResult{}, err
	}
	return g.sessions.Exec(ctx, sb.ID, req)
}

// ErrNoLogs is returned for a sandbox whose driver keeps no logs.
var ErrNoLogs = errors.New("the sandbox's driver keeps no workload logs")

// Logs returns a sandbox's workload output as its driver keeps it; with
// follow, the reader keeps returning new output until ctx ends. The
// caller closes it.
func (g *Gateway) Logs(ctx context.Context, idOrName string, follow bool) (_ io.ReadCloser, err error) {
	defer outwardTo(&err)
	sb, err := g.resolve(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return nil, err
	}
	l, ok := d.(driver.Logger)
	if !ok {
		return nil, fmt.Errorf("logs of sandbox %s: driver %s: %w", sb.Name, sb.Driver, ErrNoLogs)
	}
	r, err := l.Logs(ctx, sb.ID, follow)
	if err != nil {
		return nil, fmt.Errorf("logs of sandbox %s from driver %s: %w", sb.Name, sb.Driver, err)
	}
	return r, nil
}

// driverSpec is what a driver needs to run sb.
func (g *Gateway) driverSpec(sb store.Sandbox, spec Spec, instance string) driver.Spec {
	return driver.Spec{
		SandboxID: sb.ID, Name: sb.Name, InstanceID: instance, Image: spec.Image, Command: spec.Command,
		Env: spec.Env,
		SandboxEnv: map[string]string{
			guest.EnvAuthMode:    guest.ModeDir,
			guest.EnvSandboxID:   sb.ID,
			guest.EnvInstanceID:  instance,
			guest.EnvIssuer:      g.cfg.Issuer,
			guest.EnvAudience:    g.cfg.Audience,
			guest.EnvTrustDomain: g.cfg.TrustDomain,
		},
		TokenDir:  g.tokenDir(sb.ID),
		SocketDir: g.socketDir(sb.ID),
		StateDir:  g.driverDir(sb.ID),
	}
}

// onExit records a workload's exit reported by its supervisor.
// A report may come from an instance that was stopped and started
// again since; only the running instance's exit marks the sandbox stopped,
// and the sweep then stops rotating its token. It takes no sandbox lock: a
// Stop holds it while the driver waits for this very supervisor to end.
func (g *Gateway) onExit(r session.ExitReport) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	changed, err := g.store.MarkInstanceStopped(ctx, r.SandboxID, r.InstanceID)
	if err != nil {
		g.log.Warn("record workload exit", zap.String("sandbox", r.SandboxID), zap.Error(err))
		return
	}
	if changed {
		g.inotify.ended(r.SandboxID)
	}
	g.log.Info("workload exited", zap.String("sandbox", r.SandboxID), zap.String("instance", r.InstanceID),
		zap.Int("exit_code", r.Code), zap.Int("signal", r.Signal), zap.Bool("marked_stopped", changed))
}
