package process

import (
	"context"
	"errors"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// child is a supervisor process whose parent is this gateway process, so
// that only this driver can (and must) collect its exit status.
type child struct {
	sandboxID  string
	stateDir   string
	proc       hostproc.Process
	instanceID string
	done       chan struct{} // closed once the child is reaped and its exit recorded
}

// adopt registers c so that the reaper collects its exit, and wakes the
// reaper in case c ended before it was registered (its SIGCHLD then found
// nothing to reap).
func (d *Driver) adopt(c *child) {
	d.mu.Lock()
	if _, ok := d.children[c.proc.PID]; !ok {
		d.children[c.proc.PID] = c
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// ownChild returns the registered child that is p, or nil.
func (d *Driver) ownChild(p hostproc.Process) *child {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.children[p.PID]; ok && c.proc == p {
		return c
	}
	return nil
}

// runReaper collects the exits of the registered children until ctx ends.
// SIGCHLD signals coalesce, so every pass tries every child.
func (d *Driver) runReaper(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.sigchld:
		case <-d.wake:
		}
		d.mu.Lock()
		for _, c := range d.children {
			d.reapLocked(c)
		}
		d.mu.Unlock()
	}
}

// reapLocked collects c's exit if it has ended, records it in c's state
// directory, and unregisters c. It reports whether c has ended. d.mu must
// be held, so that a caller that finds c registered and unreaped knows it
// still runs, and one that finds it gone finds its exit recorded.
func (d *Driver) reapLocked(c *child) bool {
	var ws unix.WaitStatus
	pid, err := wait4NoHang(c.proc.PID, &ws)
	switch {
	case err != nil:
		// Someone else in this process reaped it: the status is lost.
		d.log.Warn("exit status of sandbox supervisor lost",
			zap.String("sandbox_id", c.sandboxID), zap.Int("pid", c.proc.PID), zap.Error(err))
	case pid == 0:
		return false
	default:
		d.recordExit(c.sandboxID, c.stateDir, c.proc, c.instanceID, ws)
	}
	delete(d.children, c.proc.PID)
	close(c.done)
	return true
}

// reapAdopted collects the exit of p, a zombie found through a pid file,
// if p happens to be this process's child but not a registered one (the
// gateway re-executed itself, or a Driver of this process was closed).
// For any other zombie the wait fails and its parent reaps it.
func (d *Driver) reapAdopted(sandboxID, stateDir string, rec pidRecord) {
	var ws unix.WaitStatus
	if pid, err := wait4NoHang(rec.PID, &ws); err == nil && pid == rec.PID {
		d.recordExit(sandboxID, stateDir, rec.process(), rec.InstanceID, ws)
	}
}

// wait4NoHang is wait4(pid, WNOHANG), retried on EINTR.
func wait4NoHang(pid int, ws *unix.WaitStatus) (int, error) {
	for {
		wpid, err := unix.Wait4(pid, ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return wpid, err
		}
	}
}

func (d *Driver) recordExit(sandboxID, stateDir string, p hostproc.Process, instanceID string, ws unix.WaitStatus) {
	rec := exitRecord{
		PID:        p.PID,
		StartTicks: p.StartTicks,
		InstanceID: instanceID,
		ExitCode:   hostproc.ExitCode(ws),
		ExitedAt:   d.now(),
	}
	if err := statedir.WriteJSON(filepath.Join(stateDir, exitFile), rec); err != nil {
		d.log.Warn("record exit of sandbox supervisor", zap.String("sandbox_id", sandboxID), zap.Error(err))
	}
	d.log.Info("sandbox supervisor exited", zap.String("sandbox_id", sandboxID),
		zap.String("instance_id", instanceID), zap.Int("pid", p.PID), zap.Int("exit_code", rec.ExitCode))
}
