package process

import (
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

// startRecord names the supervisor process of one start; both records
// below begin with it (their JSON holds its fields at the top level).
type startRecord struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
	InstanceID string `json:"instance_id"`
}

func (r startRecord) process() hostproc.Process {
	return hostproc.Process{PID: r.PID, StartTicks: r.StartTicks}
}

// pidRecord is the start of the current or last supervisor.
type pidRecord struct {
	startRecord
	StartedAt time.Time `json:"started_at"`
}

// exitRecord is how the supervisor of one start ended. It belongs to the
// start whose pid and start time it repeats.
type exitRecord struct {
	startRecord
	ExitCode int       `json:"exit_code"`
	ExitedAt time.Time `json:"exited_at"`
}

func readPIDRecord(dir string) (pidRecord, error) {
	return statedir.ReadRecord[pidRecord](dir, pidFile)
}

func readExitRecord(dir string) (exitRecord, error) {
	return statedir.ReadRecord[exitRecord](dir, exitFile)
}
