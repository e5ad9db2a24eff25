package process

import (
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// adopt registers the supervisor of rec, a child of this gateway
// process, with the reaper, which records its exit in dir once it ends.
func (d *Driver) adopt(sandboxID, dir string, rec pidRecord) {
	d.reaper.Add(rec.process(), func(ws unix.WaitStatus, err error) {
		if err != nil {
			// Someone else in this process reaped it: the status is lost.
			d.log.Warn("exit status of sandbox supervisor lost",
				zap.String("sandbox_id", sandboxID), zap.Int("pid", rec.PID), zap.Error(err))
			return
		}
		d.recordExit(sandboxID, dir, rec.process(), rec.InstanceID, ws)
	})
}

// reapAdopted collects the exit of p, a zombie found through a pid file,
// if p happens to be this process's child but not a registered one (the
// gateway re-executed itself, or a Driver of this process was closed).
// For any other zombie the wait fails and its parent reaps it.
func (d *Driver) reapAdopted(sandboxID, stateDir string, rec pidRecord) {
	var ws unix.WaitStatus
	if pid, err := hostproc.WaitNoHang(rec.PID, &ws); err == nil && pid == rec.PID {
		d.recordExit(sandboxID, stateDir, rec.process(), rec.InstanceID, ws)
	}
}

func (d *Driver) recordExit(sandboxID, stateDir string, p hostproc.Process, instanceID string, ws unix.WaitStatus) {
	rec := exitRecord{
		startRecord: startRecord{PID: p.PID, StartTicks: p.StartTicks, InstanceID: instanceID},
		ExitCode:    hostproc.ExitCode(ws),
		ExitedAt:    d.now(),
	}
	if err := statedir.WriteJSON(filepath.Join(stateDir, exitFile), rec); err != nil {
		d.log.Warn("record exit of sandbox supervisor", zap.String("sandbox_id", sandboxID), zap.Error(err))
	}
	d.log.Info("sandbox supervisor exited", zap.String("sandbox_id", sandboxID),
		zap.String("instance_id", instanceID), zap.Int("pid", p.PID), zap.Int("exit_code", rec.ExitCode))
}
