package process

import (
	"path/filepath"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// The files of a sandbox's state directory.
const (
	specFile = "spec.json"   // the specRecord written by Create
	pidFile  = "pid"         // the pidRecord of the current or last start
	exitFile = "exit"        // the exitRecord of the last start, once reaped
	logFile  = "sandbox.log" // the supervisor's stdout and stderr, appended
)

// specRecord is what Create keeps of a spec so that a Start after a gateway
// restart knows the command. SandboxEnv is left out on purpose: the gateway
// builds it anew for every start, and in static mode it holds a raw token,
// which must not rest on disk outside the token directory.
type specRecord struct {
	SandboxID string            `json:"sandbox_id"`
	Name      string            `json:"name,omitempty"`
	Command   []string          `json:"command"`
	Env       map[string]string `json:"env,omitempty"`
	TokenDir  string            `json:"token_dir"`
	SocketDir string            `json:"socket_dir"`
	StateDir  string            `json:"state_dir"`
}

func newSpecRecord(spec driver.Spec) specRecord {
	return specRecord{
		SandboxID: spec.SandboxID,
		Name:      spec.Name,
		Command:   spec.Command,
		Env:       driver.StripReserved(spec.Env),
		TokenDir:  spec.TokenDir,
		SocketDir: spec.SocketDir,
		StateDir:  spec.StateDir,
	}
}

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

func readSpecRecord(stateDir string) (specRecord, error) {
	var r specRecord
	err := statedir.ReadJSON(filepath.Join(stateDir, specFile), &r)
	return r, err
}
