package process

import (
	"path/filepath"
	"time"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// The files of a sandbox's state directory.
const (
	specFile = statedir.SpecFile // the spec record written by Create
	pidFile  = "pid"             // the pidRecord of the current or last start
	exitFile = "exit"            // the exitRecord of the last start, once reaped
	logFile  = "sandbox.log"     // the supervisor's stdout and stderr, appended
)

// pidRecord names the supervisor process of one start.
type pidRecord struct {
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"`
	InstanceID string    `json:"instance_id"`
	StartedAt  time.Time `json:"started_at"`
}

func (r pidRecord) process() hostproc.Process {
	return hostproc.Process{PID: r.PID, StartTicks: r.StartTicks}
}

// exitRecord is how the supervisor of one start ended. It belongs to the
// start whose pid and start time it repeats.
type exitRecord struct {
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"`
	InstanceID string    `json:"instance_id"`
	ExitCode   int       `json:"exit_code"`
	ExitedAt   time.Time `json:"exited_at"`
}

func (r exitRecord) process() hostproc.Process {
	return hostproc.Process{PID: r.PID, StartTicks: r.StartTicks}
}

func readPIDRecord(stateDir string) (pidRecord, error) {
	var r pidRecord
	err := statedir.ReadJSON(filepath.Join(stateDir, pidFile), &r)
	return r, err
}

func readExitRecord(stateDir string) (exitRecord, error) {
	var r exitRecord
	err := statedir.ReadJSON(filepath.Join(stateDir, exitFile), &r)
	return r, err
}
