package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
	"github.com/sandkey/sandkey/pkg/vmfs"
	"github.com/sandkey/sandkey/pkg/vmfs/krun"
)

// Name is the name the driver registers under.
const Name = "vm"

// Backends.
const (
	BackendQEMU = "qemu"
	BackendKrun = "krun"
)

// Accelerators for QEMU.
const (
	AccelAuto = "auto" // KVM when /dev/kvm works, else TCG
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Defaults of Config.
const (
	DefaultMemoryMiB = 512
	DefaultCPUs      = 1
	DefaultQEMU      = "qemu-system-x86_64"
	// defaultDeleteGrace is the grace Delete gives a running VM.
	defaultDeleteGrace = 10 * time.Second
	// killWait bounds the wait for processes to end after SIGTERM to the
	// VMM (QEMU then exits at once) and after SIGKILL.
	killWait = 10 * time.Second
	// virtiofsdWait is how long virtiofsd gets to end by itself once its
	// VM is gone (it exits when QEMU disconnects).
	virtiofsdWait = 2 * time.Second
	// pollInterval is how often Stop looks at /proc for a VMM that is not
	// this process's child.
	pollInterval = 20 * time.Millisecond
)

var (
	// ErrAlreadyRunning is returned by Start for a sandbox whose VM runs.
	ErrAlreadyRunning = errors.New("sandbox already running")
	// ErrClosed is returned by every method of a closed Driver.
	ErrClosed = errors.New("vm driver closed")
)

// Config configures a Driver.
type Config struct {
	// Backend is BackendQEMU (the default) or BackendKrun.
	Backend string
	// StateRoot holds the driver's index of sandboxes, and the state
	// directory of a sandbox whose spec names none.
	StateRoot string
	// Image is the guest image directory images/vm/build.sh makes
	// (vmlinuz, initrd.gz, cmdline for QEMU; rootfs/ for libkrun). A
	// spec's Image, when set, names another one.
	Image string
	// MemoryMiB and CPUs size every VM (defaults 512 and 1).
	MemoryMiB int
	CPUs      int

	// QEMU backend.
	QEMU      string // default DefaultQEMU, looked up on PATH
	Virtiofsd string // default vmfs.DefaultVirtiofsd
	Socat     string // default socat, looked up on PATH
	Accel     string // AccelAuto (default), AccelKVM or AccelTCG

	// libkrun backend.
	KrunLibrary string // default krun.DefaultLibrary
	// KrunRunner is the command that runs one libkrun VM, given the path
	// of its description as a last argument: `gateway vm-krun-run`.
	KrunRunner []string

	// Logger defaults to zap.NewNop(); Now to time.Now.
	Logger *zap.Logger
	Now    func() time.Time
	// DeleteGrace is the grace Delete gives a running VM (default 10 s).
	DeleteGrace time.Duration
}

// Driver runs each sandbox as a microVM.
type Driver struct {
	cfg       Config
	sandboxes *statedir.Sandboxes
	accel     string // QEMU: resolved once, at New
	log       *zap.Logger
	now       func() time.Time
	reaper    *hostproc.Reaper
	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
}

var (
	_ driver.Driver = (*Driver)(nil)
	_ driver.Logger = (*Driver)(nil)
)

// New checks cfg, resolves the backend's programs, and starts the
// driver's reaper. Close stops the reaper and leaves the VMs running.
func New(cfg Config) (*Driver, error) {
	if cfg.Backend == "" {
		cfg.Backend = BackendQEMU
	}
	if cfg.StateRoot == "" {
		return nil, errors.New("vm driver: no state root configured")
	}
	root, err := filepath.Abs(cfg.StateRoot)
	if err != nil {
		return nil, fmt.Errorf("vm driver: state root %s: %w", cfg.StateRoot, err)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.MemoryMiB < 64 || cfg.CPUs < 1 || cfg.CPUs > 255 {
		return nil, fmt.Errorf("vm driver: %d MiB and %d CPUs: want at least 64 MiB and 1 to 255 CPUs", cfg.MemoryMiB, cfg.CPUs)
	}
	if cfg.DeleteGrace <= 0 {
		cfg.DeleteGrace = defaultDeleteGrace
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if d.now == nil {
		d.now = time.Now
	}
	switch cfg.Backend {
	case BackendQEMU:
		err = d.resolveQEMU()
	case BackendKrun:
		err = d.resolveKrun()
	default:
		err = fmt.Errorf("backend %q: want %s or %s", cfg.Backend, BackendQEMU, BackendKrun)
	}
	if err != nil {
		return nil, fmt.Errorf("vm driver: %w", err)
	}
	if d.sandboxes, err = statedir.OpenSandboxes(root); err != nil {
		return nil, fmt.Errorf("vm driver: state root: %w", err)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.reaper = hostproc.NewReaper()
	return d, nil
}

// resolveQEMU finds QEMU, virtiofsd and socat, and picks the accelerator.
func (d *Driver) resolveQEMU() error {
	var err error
	if d.cfg.QEMU, err = lookProgram(d.cfg.QEMU, DefaultQEMU, "qemu-system-x86"); err != nil {
		return err
	}
	if d.cfg.Virtiofsd, err = lookProgram(d.cfg.Virtiofsd, vmfs.DefaultVirtiofsd, "qemu-system-x86"); err != nil {
		return err
	}
	if d.cfg.Socat, err = lookProgram(d.cfg.Socat, "socat", "socat"); err != nil {
		return err
	}
	switch d.cfg.Accel {
	case "", AccelAuto:
		d.accel = AccelTCG
		if kvmUsable() {
			d.accel = AccelKVM
		}
	case AccelKVM, AccelTCG:
		d.accel = d.cfg.Accel
	default:
		return fmt.Errorf("accelerator %q: want %s, %s or %s", d.cfg.Accel, AccelAuto, AccelKVM, AccelTCG)
	}
	d.log.Info("vm driver: QEMU backend", zap.String("qemu", d.cfg.QEMU), zap.String("accel", d.accel))
	return nil
}

func (d *Driver) resolveKrun() error {
	if len(d.cfg.KrunRunner) == 0 {
		return errors.New("libkrun backend: no runner command configured (the gateway's `vm-krun-run`)")
	}
	if d.cfg.KrunLibrary == "" {
		d.cfg.KrunLibrary = krun.DefaultLibrary
	}
	return nil
}

// lookProgram resolves a configured program, or its default, to a path.
func lookProgram(configured, def, pkg string) (string, error) {
	name := configured
	if name == "" {
		name = def
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: %w (on Debian: apt-get install %s, or run scripts/vm-deps.sh)", name, err, pkg)
	}
	return filepath.Abs(path)
}

// Close stops the reaper. VMs keep running: a later Driver on the same
// state root finds them. Idempotent.
func (d *Driver) Close() error {
	if d.ctx.Err() == nil {
		d.cancel()
		d.reaper.Close()
	}
	return nil
}

func (d *Driver) Name() string { return Name }

// TokenDelivery is dir-virtiofs: a read-only virtio-fs share the guest
// polls.
func (d *Driver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryDirVirtiofs }

// Create makes the sandbox's state directory, records its spec and
// indexes it. Idempotent.
func (d *Driver) Create(ctx context.Context, spec driver.Spec) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	return d.sandboxes.Create(spec)
}

// Start boots the sandbox's VM, creating the sandbox first if needed. A
// spec without a command boots what Create recorded. Starting a running
// sandbox fails with ErrAlreadyRunning.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	spec, unlock, err := d.sandboxes.BeginStart(spec)
	if err != nil {
		return err
	}
	defer unlock()
	switch rec, err := readVMRecord(spec.StateDir); {
	case err == nil && d.vmmRunning(rec):
		return fmt.Errorf("start sandbox %s: %w (VMM pid %d, instance %s)", spec.SandboxID, ErrAlreadyRunning, rec.VMM.PID, rec.InstanceID)
	case err == nil:
		// The last start's virtiofsd may outlive a VMM that was killed.
		d.endVirtiofsd(rec)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("start sandbox %s: %w", spec.SandboxID, err)
	}
	if err := os.Remove(filepath.Join(spec.StateDir, exitFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("start sandbox %s: clear last exit: %w", spec.SandboxID, err)
	}
	if d.cfg.Backend == BackendKrun {
		return d.startKrun(spec)
	}
	return d.startQEMU(spec)
}

// Stop asks the guest to stop (its supervisor then stops the workload as
// on SIGTERM and powers the VM off), waits up to grace for the VMM to end,
// then ends the VMM (SIGTERM: QEMU exits at once, without the guest), and
// after killWait kills what is left of the VM's processes. Stopping a
// stopped sandbox does nothing; an unknown one yields driver.ErrNotFound.
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
	rec, err := readVMRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // never started
	}
	if err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if d.vmmRunning(rec) {
		d.log.Info("stopping sandbox", zap.String("sandbox_id", id), zap.Int("vmm_pid", rec.VMM.PID), zap.Duration("grace", grace))
		stopRequested := d.requestStop(dir, rec)
		ended, err := d.waitEnded(ctx, rec.VMM, grace)
		stopRequested()
		if err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
		if !ended {
			d.log.Info("sandbox outlived its grace; ending its VM", zap.String("sandbox_id", id))
			if err := rec.VMM.Signal(unix.SIGTERM); err != nil {
				return fmt.Errorf("stop sandbox %s: %w", id, err)
			}
			if ended, err = d.waitEnded(ctx, rec.VMM, killWait); err != nil {
				return fmt.Errorf("stop sandbox %s: %w", id, err)
			}
		}
		if !ended {
			d.log.Warn("VMM ignored SIGTERM; killing it", zap.String("sandbox_id", id), zap.Int("vmm_pid", rec.VMM.PID))
		}
	}
	// Kill what is left: the VMM if it ignored SIGTERM, and what it
	// started in its session.
	if err := rec.VMM.KillSession(killWait); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	d.endBridges(dir)
	d.endVirtiofsd(rec)
	d.log.Info("sandbox stopped", zap.String("sandbox_id", id))
	return nil
}

// endBridges kills the session bridges of a VM that has ended. QEMU's user
// network starts each socat detached, in a session of its own, so they are
// found by their arguments, which name this sandbox's socat log. Each ends
// by itself once QEMU is gone; this makes sure.
func (d *Driver) endBridges(dir string) {
	for _, p := range processesWithArg(filepath.Join(dir, socatLog)) {
		p.Signal(unix.SIGKILL)
	}
}

// endVirtiofsd waits for the start's virtiofsd to end by itself (it does
// once QEMU disconnects), then ends it and its sandboxed server.
func (d *Driver) endVirtiofsd(rec vmRecord) {
	if rec.Virtiofsd.PID == 0 {
		return
	}
	if ended, _ := d.waitEnded(context.Background(), rec.Virtiofsd, virtiofsdWait); !ended {
		rec.Virtiofsd.Signal(unix.SIGTERM)
		d.waitEnded(context.Background(), rec.Virtiofsd, virtiofsdWait)
	}
	if err := rec.Virtiofsd.KillSession(killWait); err != nil {
		d.log.Warn("virtiofsd outlived SIGKILL", zap.Int("pid", rec.Virtiofsd.PID), zap.Error(err))
	}
}

// waitEnded waits up to timeout for p to end (see
// hostproc.Reaper.WaitEnded).
func (d *Driver) waitEnded(ctx context.Context, p hostproc.Process, timeout time.Duration) (bool, error) {
	return d.reaper.WaitEnded(ctx, p, timeout, pollInterval, func() bool { return d.running(p) })
}

// running reports whether p runs. A child of this process is registered
// with the reaper (a Driver of this process may have started it before
// this one was opened) and reaped first if it ended, so that it never
// reads as running while a zombie, and its exit is recorded before this
// returns.
func (d *Driver) running(p hostproc.Process) bool {
	if st, err := hostproc.ReadStat(p.PID); err == nil && st.StartTicks == p.StartTicks && st.PPID == os.Getpid() {
		d.reaper.Add(p, nil)
	}
	if running, ok := d.reaper.Running(p); ok {
		return running
	}
	return p.Alive()
}

// vmmRunning reports whether the VMM of rec runs.
func (d *Driver) vmmRunning(rec vmRecord) bool { return d.running(rec.VMM) }

// Delete stops a running sandbox (with Config.DeleteGrace) and removes its
// state directory and index entry. Idempotent.
func (d *Driver) Delete(ctx context.Context, sandboxID string) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	err := d.sandboxes.Delete(sandboxID, func(dir string) error {
		return d.stop(ctx, sandboxID, dir, d.cfg.DeleteGrace)
	})
	if err != nil {
		return err
	}
	d.log.Info("sandbox deleted", zap.String("sandbox_id", sandboxID))
	return nil
}

// Status reports running while the recorded VMM (same pid, same start
// time) runs; stopped otherwise, with the guest's exit code when the
// guest reported one; missing without a state directory.
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
	rec, err := readVMRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return driver.Status{State: driver.StateStopped, Detail: "created, never started"}, nil
	}
	if err != nil {
		return driver.Status{}, fmt.Errorf("status of sandbox %s: %w", sandboxID, err)
	}
	if d.vmmRunning(rec) {
		return driver.Status{State: driver.StateRunning, InstanceID: rec.InstanceID,
			Detail: fmt.Sprintf("%s VM, VMM pid %d", rec.Backend, rec.VMM.PID)}, nil
	}
	st := driver.Status{State: driver.StateStopped, InstanceID: rec.InstanceID}
	if code, ok := d.exitCode(dir, rec); ok {
		st.Exited, st.ExitCode = true, code
		st.Detail = fmt.Sprintf("guest supervisor exited with code %d", code)
	} else {
		st.Detail = "VM ended; the guest reported no exit code (killed, or stopped before its workload ended)"
	}
	return st, nil
}

// exitCode is the guest supervisor's exit code for the last start: the
// marker its init writes to the console before powering off (QEMU), or
// the runner's exit status, which libkrun makes the workload's.
func (d *Driver) exitCode(dir string, rec vmRecord) (int, bool) {
	if rec.Backend == BackendKrun {
		if exit, err := readExitRecord(dir); err == nil && exit.VMM == rec.VMM {
			return exit.Code, true
		}
		return 0, false
	}
	return consoleExitCode(filepath.Join(dir, consoleLog))
}

func (d *Driver) checkOpen() error {
	if d.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

// Logs implements driver.Logger: the guest's console
// (<StateDir>/console.log): the kernel's, the init's and the workload's
// output of the current start.
func (d *Driver) Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	return d.sandboxes.Logs(ctx, sandboxID, consoleLog, follow)
}

// image is the guest image directory a spec boots.
func (d *Driver) image(spec driver.Spec) (string, error) {
	dir := spec.Image
	if dir == "" {
		dir = d.cfg.Image
	}
	if dir == "" {
		return "", errors.New("no guest image: build one with images/vm/build.sh (make vm-image) and configure the vm driver with it")
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("guest image %q is not an absolute path", dir)
	}
	return dir, nil
}
