package statedir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/sandboxlock"
)

// SpecFile is the file in a sandbox's state directory that holds its
// SpecRecord.
const SpecFile = "spec.json"

// SpecRecord is what Create keeps of a spec, so that a Start after a
// gateway restart knows the command. SandboxEnv is left out on purpose:
// the gateway builds it anew for every start, and in static mode it holds
// a raw token, which must not rest on disk outside the token directory.
type SpecRecord struct {
	SandboxID string            `json:"sandbox_id"`
	Name      string            `json:"name,omitempty"`
	Image     string            `json:"image,omitempty"`
	Command   []string          `json:"command"`
	Env       map[string]string `json:"env,omitempty"`
	TokenDir  string            `json:"token_dir"`
	SocketDir string            `json:"socket_dir"`
	StateDir  string            `json:"state_dir"`
}

// ReadSpec reads the SpecRecord of the sandbox whose state directory is
// dir.
func ReadSpec(dir string) (SpecRecord, error) { return ReadRecord[SpecRecord](dir, SpecFile) }

// Sandboxes is the part of a host-process driver (process, vm) that does
// not depend on what it runs: the index, one lock per sandbox, the spec
// record, and the order of the steps of Create, Start, Stop, Delete,
// Status and Logs around the driver's own launch and stop.
type Sandboxes struct {
	*Index
	locks sandboxlock.Set
}

// OpenSandboxes opens the index under stateRoot (see OpenIndex).
func OpenSandboxes(stateRoot string) (*Sandboxes, error) {
	x, err := OpenIndex(stateRoot)
	if err != nil {
		return nil, err
	}
	return &Sandboxes{Index: x}, nil
}

// Lock takes the lock of sandbox id, which orders the driver operations
// that change it; the func it returns releases it.
func (s *Sandboxes) Lock(id string) (unlock func()) { return s.locks.Lock(id) }

// Create normalizes spec, refuses one without a command, and makes the
// sandbox's state directory (0700), records its spec and indexes it, under
// its lock. A repeated Create replaces the recorded spec.
func (s *Sandboxes) Create(spec driver.Spec) error {
	spec, err := s.Normalize(spec)
	if err != nil {
		return fmt.Errorf("create sandbox %q: %w", spec.SandboxID, err)
	}
	if len(spec.Command) == 0 {
		return fmt.Errorf("create sandbox %s: no command", spec.SandboxID)
	}
	defer s.Lock(spec.SandboxID)()
	return s.record(spec)
}

// BeginStart is the first half of a Start: it normalizes spec, takes the
// sandbox's lock, gives a spec without a command the command (and, where
// unset, the environment and image) Create recorded, and records the
// spec as Create does. On success the caller holds the lock until it
// calls unlock.
func (s *Sandboxes) BeginStart(spec driver.Spec) (_ driver.Spec, unlock func(), _ error) {
	spec, err := s.Normalize(spec)
	if err != nil {
		return spec, nil, fmt.Errorf("start sandbox %q: %w", spec.SandboxID, err)
	}
	unlock = s.Lock(spec.SandboxID)
	if len(spec.Command) == 0 {
		if rec, err := ReadSpec(spec.StateDir); err == nil {
			spec.Command = rec.Command
			if spec.Env == nil {
				spec.Env = rec.Env
			}
			if spec.Image == "" {
				spec.Image = rec.Image
			}
		}
	}
	if len(spec.Command) == 0 {
		unlock()
		return spec, nil, fmt.Errorf("start sandbox %s: no command given, and none recorded by Create", spec.SandboxID)
	}
	if err := s.record(spec); err != nil {
		unlock()
		return spec, nil, err
	}
	return spec, unlock, nil
}

func (s *Sandboxes) record(spec driver.Spec) error {
	if err := MakePrivate(spec.StateDir); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	}
	rec := SpecRecord{
		SandboxID: spec.SandboxID,
		Name:      spec.Name,
		Image:     spec.Image,
		Command:   spec.Command,
		Env:       driver.StripReserved(spec.Env),
		TokenDir:  spec.TokenDir,
		SocketDir: spec.SocketDir,
		StateDir:  spec.StateDir,
	}
	if err := WriteJSON(filepath.Join(spec.StateDir, SpecFile), rec); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	}
	if err := s.Link(spec.SandboxID, spec.StateDir); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.SandboxID, err)
	}
	return nil
}

// Dir returns the state directory of sandbox id. Its errors begin with op
// ("stop sandbox", "logs of sandbox"); a sandbox the index does not know
// yields one matching driver.ErrNotFound.
func (s *Sandboxes) Dir(op, id string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", fmt.Errorf("%s %q: %w", op, id, err)
	}
	dir, err := s.Lookup(id)
	if errors.Is(err, ErrNoState) {
		return "", fmt.Errorf("%s %s: %w", op, id, driver.ErrNotFound)
	}
	return dir, err
}

// Delete runs stop on the state directory of sandbox id, if it has one,
// then removes the directory and the index entry, under the sandbox's
// lock. Deleting an unknown sandbox does nothing.
func (s *Sandboxes) Delete(id string, stop func(dir string) error) error {
	if err := CheckID(id); err != nil {
		return fmt.Errorf("delete sandbox %q: %w", id, err)
	}
	defer s.Lock(id)()
	dir, err := s.Lookup(id)
	switch {
	case errors.Is(err, ErrNoState):
	case err != nil:
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	default:
		if err := stop(dir); err != nil {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
	}
	if err := s.Unlink(id); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	}
	return nil
}

// Logs opens file, in the state directory of sandbox id, as
// driver.Logger's Logs does (see OpenLog).
func (s *Sandboxes) Logs(ctx context.Context, id, file string, follow bool) (io.ReadCloser, error) {
	dir, err := s.Dir("logs of sandbox", id)
	if err != nil {
		return nil, err
	}
	return OpenLog(ctx, filepath.Join(dir, file), follow, LogPoll)
}
