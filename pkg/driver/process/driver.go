package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// Name is the name the driver registers under.
const Name = "process"

const (
	// defaultDeleteGrace is the grace Delete gives a running sandbox when
	// Config.DeleteGrace is zero; the gateway normally stops a sandbox,
	// with the operator's grace, before it deletes it.
	defaultDeleteGrace = 10 * time.Second
	// killWait bounds the wait for a sandbox's processes to end after
	// SIGKILL; only a process stuck in the kernel outlives it.
	killWait = 10 * time.Second
	// pollInterval is how often Stop looks at /proc for a supervisor that
	// is not this process's child (the gateway restarted since it started
	// it), whose end sends no SIGCHLD here.
	pollInterval = 20 * time.Millisecond
)

var (
	// ErrAlreadyRunning is returned by Start for a sandbox whose
	// supervisor runs.
	ErrAlreadyRunning = errors.New("sandbox already running")
	// ErrClosed is returned by every method of a closed Driver.
	ErrClosed = errors.New("process driver closed")
)

// Config configures a Driver.
type Config struct {
	// SupervisorPath is the sandkey supervisor binary; it must exist and be
	// executable.
	SupervisorPath string
	// StateRoot holds the driver's index of sandboxes (see the package
	// doc), and the state directory of a sandbox whose spec names none.
	// A Driver opened later on the same StateRoot finds the sandboxes an
	// earlier one started.
	StateRoot string
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
	// Now stamps start and exit records; defaults to time.Now.
	Now func() time.Time
	// DeleteGrace is the grace Delete gives a running sandbox before
	// SIGKILL; defaults to 10 s.
	DeleteGrace time.Duration
}

// Driver runs each sandbox as a child process of the gateway.
type Driver struct {
	supervisor  string
	sandboxes   *statedir.Sandboxes
	deleteGrace time.Duration
	log         *zap.Logger
	now         func() time.Time

	reaper    *hostproc.Reaper
	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var (
	_ driver.Driver = (*Driver)(nil)
	_ driver.Logger = (*Driver)(nil)
)

// New checks cfg, creates the state root's index and starts the driver's
// reaper. Close stops the reaper and leaves the sandboxes running.
func New(cfg Config) (*Driver, error) {
	supervisor, err := checkSupervisor(cfg.SupervisorPath)
	if err != nil {
		return nil, err
	}
	if cfg.StateRoot == "" {
		return nil, errors.New("process driver: no state root configured")
	}
	root, err := filepath.Abs(cfg.StateRoot)
	if err != nil {
		return nil, fmt.Errorf("process driver: state root %s: %w", cfg.StateRoot, err)
	}
	sandboxes, err := statedir.OpenSandboxes(root)
	if err != nil {
		return nil, fmt.Errorf("process driver: state root: %w", err)
	}
	d := &Driver{
		supervisor:  supervisor,
		sandboxes:   sandboxes,
		deleteGrace: cfg.DeleteGrace,
		log:         cfg.Logger,
		now:         cfg.Now,
	}
	if d.deleteGrace <= 0 {
		d.deleteGrace = defaultDeleteGrace
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.reaper = hostproc.NewReaper()
	return d, nil
}

// checkSupervisor returns the absolute path of the supervisor binary, or
// an error saying why it cannot be run.
func checkSupervisor(path string) (string, error) {
	if path == "" {
		return "", errors.New("process driver: no supervisor path configured: set it to the sandkey supervisor binary")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("process driver: supervisor %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("process driver: supervisor %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("process driver: supervisor %s is not a regular file", abs)
	}
	if err := unix.Access(abs, unix.X_OK); err != nil {
		return "", fmt.Errorf("process driver: supervisor %s is not executable: %w", abs, err)
	}
	return abs, nil
}

// Close stops the driver's reaper. Sandboxes keep running: a later Driver
// on the same state root finds them. Close is idempotent.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		d.reaper.Close()
	})
	return nil
}

func (d *Driver) Name() string { return Name }

// TokenDelivery is dir-bind: the supervisor reads the host's token
// directory in place.
func (d *Driver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryDirBind }

// Create makes the sandbox's state directory (0700), records its spec and
// indexes it. Idempotent; a repeated Create replaces the recorded spec.
func (d *Driver) Create(ctx context.Context, spec driver.Spec) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	return d.sandboxes.Create(spec)
}

// Start runs `<supervisor> -- <command...>` for the sandbox, creating the
// sandbox first if needed. A spec without a command runs the command (and
// environment) that Create recorded. Starting a running sandbox fails with
// ErrAlreadyRunning and leaves it running: its supervisor holds another
// instance ID, which a silent success would hide.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	spec, unlock, err := d.sandboxes.BeginStart(spec)
	if err != nil {
		return err
	}
	defer unlock()
	switch rec, err := readPIDRecord(spec.StateDir); {
	case err == nil && d.running(spec.SandboxID, spec.StateDir, rec):
		return fmt.Errorf("start sandbox %s: %w (supervisor pid %d, instance %s)",
			spec.SandboxID, ErrAlreadyRunning, rec.PID, rec.InstanceID)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
	}
	return d.launch(spec)
}

// launch starts the supervisor, records its pid and start time, and hands
// it to the reaper.
func (d *Driver) launch(spec driver.Spec) error {
	id, dir := spec.SandboxID, spec.StateDir
	logPath := filepath.Join(dir, logFile)
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start sandbox %s: open log: %w", id, err)
	}
	defer out.Close()
	if err := os.Remove(filepath.Join(dir, exitFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("start sandbox %s: clear last exit: %w", id, err)
	}

	cmd := exec.Command(d.supervisor, append([]string{"--"}, spec.Command...)...)
	cmd.Env = environ(spec)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out // stdin stays nil: /dev/null
	// A session of its own (so also a process group of its own): see the
	// package doc. No Pdeathsig: the sandbox outlives the gateway.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sandbox %s: run supervisor %s: %w", id, d.supervisor, err)
	}
	pid := cmd.Process.Pid
	// The reaper, not cmd.Wait, collects the exit; drop Go's handle.
	cmd.Process.Release()

	st, err := hostproc.ReadStat(pid)
	if err != nil {
		// Cannot happen to an unreaped child; never leave one untracked.
		unix.Kill(-pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	rec := pidRecord{startRecord: startRecord{PID: pid, StartTicks: st.StartTicks, InstanceID: spec.InstanceID}, StartedAt: d.now()}
	werr := statedir.WriteJSON(filepath.Join(dir, pidFile), rec)
	// Adopt after the pid record is written, so that an exit record never
	// precedes the pid record it belongs to.
	d.adopt(id, dir, rec)
	if werr != nil {
		// Untracked by any file, it could never be stopped: end it now.
		rec.process().KillSession(killWait)
		return fmt.Errorf("start sandbox %s: %w", id, werr)
	}
	d.log.Info("sandbox started", zap.String("sandbox_id", id), zap.String("instance_id", spec.InstanceID),
		zap.Int("pid", pid), zap.String("log", logPath))
	return nil
}

// Stop sends SIGTERM to the supervisor's process group, waits up to grace
// for the supervisor to end, then kills every process of the sandbox's
// session. Stopping a stopped sandbox does nothing; an unknown one yields
// driver.ErrNotFound.
func (d *Driver) Stop(ctx context.Context, sandboxID string, grace time.Duration) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	defer d.sandboxes.Lock(sandboxID)()
	dir, err := d.sandboxes.Dir("stop sandbox", sandboxID)
	if err != nil {
		return err
	}
	return d.stop(ctx, sandboxID, dir, grace)
}

func (d *Driver) stop(ctx context.Context, id, dir string, grace time.Duration) error {
	rec, err := readPIDRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // never started
	}
	if err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if !d.running(id, dir, rec) {
		return nil
	}
	p := rec.process()
	d.log.Info("stopping sandbox", zap.String("sandbox_id", id), zap.Int("pid", p.PID), zap.Duration("grace", grace))
	if err := p.SignalGroup(unix.SIGTERM); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	ended, err := d.waitEnded(ctx, id, dir, rec, grace)
	if err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if !ended {
		d.log.Info("sandbox outlived its grace; killing it", zap.String("sandbox_id", id), zap.Int("pid", p.PID))
	}
	// Kill what is left: the supervisor after its grace, or the processes
	// that outlived it. The session id cannot have been reused: it stays
	// taken while any process of the session lives.
	if err := p.KillSession(killWait); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if !ended {
		if ended, err = d.waitEnded(ctx, id, dir, rec, killWait); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
		if !ended {
			return fmt.Errorf("stop sandbox %s: supervisor pid %d still runs %s after SIGKILL", id, p.PID, killWait)
		}
	}
	d.log.Info("sandbox stopped", zap.String("sandbox_id", id), zap.Int("pid", p.PID))
	return nil
}

// waitEnded waits up to timeout for the supervisor of rec to end (see
// hostproc.Reaper.WaitEnded).
func (d *Driver) waitEnded(ctx context.Context, id, dir string, rec pidRecord, timeout time.Duration) (bool, error) {
	return d.reaper.WaitEnded(ctx, rec.process(), timeout, pollInterval, func() bool { return d.running(id, dir, rec) })
}

// running reports whether the supervisor of rec still runs. It collects
// the supervisor's exit when this process is its parent, and registers a
// running supervisor whose parent this process is but which no reaper
// watches (the gateway re-executed itself, or an earlier Driver of this
// process was closed).
func (d *Driver) running(id, dir string, rec pidRecord) bool {
	p := rec.process()
	if running, ok := d.reaper.Running(p); ok {
		return running
	}
	switch state, ppid := p.Observe(); state {
	case hostproc.Alive:
		if ppid == os.Getpid() && d.ctx.Err() == nil {
			d.adopt(id, dir, rec)
		}
		return true
	case hostproc.Zombie:
		d.reapAdopted(id, dir, rec)
	}
	return false
}

// Delete stops a running sandbox (with Config.DeleteGrace) and removes its
// state directory and index entry. Idempotent.
func (d *Driver) Delete(ctx context.Context, sandboxID string) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	err := d.sandboxes.Delete(sandboxID, func(dir string) error {
		return d.stop(ctx, sandboxID, dir, d.deleteGrace)
	})
	if err != nil {
		return err
	}
	d.log.Info("sandbox deleted", zap.String("sandbox_id", sandboxID))
	return nil
}

// Status reports running while the recorded supervisor (same pid, same
// start time) runs; stopped, with its exit code when this gateway process
// collected it, once it ended; missing when the sandbox has no state
// directory.
func (d *Driver) Status(ctx context.Context, sandboxID string) (driver.Status, error) {
	if err := d.checkOpen(); err != nil {
		return driver.Status{}, err
	}
	dir, err := d.sandboxes.Dir("status of sandbox", sandboxID)
	if errors.Is(err, driver.ErrNotFound) {
		return driver.Status{State: driver.StateMissing}, nil
	}
	if err != nil {
		return driver.Status{}, err
	}
	rec, err := readPIDRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return driver.Status{State: driver.StateStopped, Detail: "created, never started"}, nil
	}
	if err != nil {
		return driver.Status{}, fmt.Errorf("status of sandbox %s: %w", sandboxID, err)
	}
	if d.running(sandboxID, dir, rec) {
		return driver.Status{
			State:      driver.StateRunning,
			InstanceID: rec.InstanceID,
			Detail:     fmt.Sprintf("supervisor pid %d", rec.PID),
		}, nil
	}
	st := driver.Status{State: driver.StateStopped, InstanceID: rec.InstanceID}
	if exit, err := readExitRecord(dir); err == nil && exit.process() == rec.process() {
		st.Exited, st.ExitCode = true, exit.ExitCode
		st.Detail = fmt.Sprintf("supervisor pid %d exited with code %d at %s",
			exit.PID, exit.ExitCode, exit.ExitedAt.Format(time.RFC3339))
	} else {
		st.Detail = fmt.Sprintf("supervisor pid %d ended; exit status unknown: it was not a child of this gateway process", rec.PID)
	}
	return st, nil
}

func (d *Driver) checkOpen() error {
	if d.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

// Logs implements driver.Logger: the supervisor's and the workload's
// output, appended to <StateDir>/sandbox.log over every start.
func (d *Driver) Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	return d.sandboxes.Logs(ctx, sandboxID, logFile, follow)
}
