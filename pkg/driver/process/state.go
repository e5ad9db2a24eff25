package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
)

// The files of a sandbox's state directory.
const (
	specFile = "spec.json"   // the specRecord written by Create
	pidFile  = "pid"         // the pidRecord of the current or last start
	exitFile = "exit"        // the exitRecord of the last start, once reaped
	logFile  = "sandbox.log" // the supervisor's stdout and stderr, appended
)

// indexDir is the directory under Config.StateRoot that maps sandbox IDs to
// state directories (see the package doc).
const indexDir = "sandboxes"

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

func (r pidRecord) process() process { return process{PID: r.PID, StartTicks: r.StartTicks} }

// exitRecord is how the supervisor of one start ended. It belongs to the
// start whose pid and start time it repeats.
type exitRecord struct {
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"`
	InstanceID string    `json:"instance_id"`
	ExitCode   int       `json:"exit_code"`
	ExitedAt   time.Time `json:"exited_at"`
}

func (r exitRecord) process() process { return process{PID: r.PID, StartTicks: r.StartTicks} }

// writeJSONAtomic writes v as JSON to path, mode 0600, through a temporary
// file renamed over path, so a reader sees the old content or the new one,
// never a part. It does not fsync: after a host crash no recorded process
// runs any more, so a lost record costs nothing.
func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readJSON decodes the JSON file at path into v; a missing file yields an
// error matching fs.ErrNotExist.
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func readPIDRecord(stateDir string) (pidRecord, error) {
	var r pidRecord
	err := readJSON(filepath.Join(stateDir, pidFile), &r)
	return r, err
}

func readExitRecord(stateDir string) (exitRecord, error) {
	var r exitRecord
	err := readJSON(filepath.Join(stateDir, exitFile), &r)
	return r, err
}

func readSpecRecord(stateDir string) (specRecord, error) {
	var r specRecord
	err := readJSON(filepath.Join(stateDir, specFile), &r)
	return r, err
}

// makePrivateDir creates dir and its missing parents and makes dir 0700,
// whatever mode it had.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// indexPath is where the index entry of sandbox id lives.
func (d *Driver) indexPath(id string) string {
	return filepath.Join(d.stateRoot, indexDir, id)
}

// link points the index entry of id at stateDir, replacing an entry that
// points elsewhere. A state directory that is the index path itself needs
// no entry.
func (d *Driver) link(id, stateDir string) error {
	entry := d.indexPath(id)
	if entry == stateDir {
		return nil
	}
	if target, err := os.Readlink(entry); err == nil && target == stateDir {
		return nil
	}
	// Sandbox IDs never start with a dot, so tmp names no other sandbox.
	tmp := filepath.Join(filepath.Dir(entry), "."+id+".link")
	os.Remove(tmp)
	if err := os.Symlink(stateDir, tmp); err != nil {
		return fmt.Errorf("link %s -> %s: %w", tmp, stateDir, err)
	}
	if err := os.Rename(tmp, entry); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s -> %s: %w", entry, stateDir, err)
	}
	return nil
}

// errNoState says the driver holds no state directory for a sandbox.
var errNoState = errors.New("no state directory")

// lookup finds the state directory of sandbox id through the index. It
// returns errNoState when there is no index entry or no directory behind it.
func (d *Driver) lookup(id string) (string, error) {
	entry := d.indexPath(id)
	fi, err := os.Lstat(entry)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errNoState
	}
	if err != nil {
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	}
	dir := entry
	if fi.Mode()&fs.ModeSymlink != 0 {
		if dir, err = os.Readlink(entry); err != nil {
			return "", fmt.Errorf("look up sandbox %s: %w", id, err)
		}
	}
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return "", errNoState
	case err != nil:
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	case !fi.IsDir():
		return "", fmt.Errorf("look up sandbox %s: %s is not a directory", id, dir)
	}
	return dir, nil
}
