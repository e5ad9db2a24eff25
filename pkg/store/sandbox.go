package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandkey/sandkey/pkg/randid"
)

// SandboxState is the lifecycle state the gateway last recorded.
type SandboxState string

// Sandbox states.
const (
	SandboxCreated  SandboxState = "created"
	SandboxRunning  SandboxState = "running"
	SandboxStopped  SandboxState = "stopped"
	SandboxVanished SandboxState = "vanished" // the driver no longer knows it
)

// Valid reports whether st is one of the known states.
func (st SandboxState) Valid() bool {
	switch st {
	case SandboxCreated, SandboxRunning, SandboxStopped, SandboxVanished:
		return true
	}
	return false
}

// sandboxIDBytes is the entropy of a sandbox id: 128 random bits, so an id
// is never reused, even across deletions, and cannot be guessed.
const sandboxIDBytes = 16

// IsSandboxID reports whether s has the form of a sandbox id: 32
// lower-case hex digits.
func IsSandboxID(s string) bool {
	if len(s) != 2*sandboxIDBytes {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Sandbox is one sandbox's row.
type Sandbox struct {
	ID         string // 32 hex digits, chosen by CreateSandbox
	Name       string // unique among existing sandboxes
	Driver     string
	State      SandboxState
	Spec       json.RawMessage // opaque to the store; valid JSON
	InstanceID string          // the driver's id of the current instance
	RunID      string          // the backend's name of the current run ("" when it has none)

	LatestGen    uint64    // newest generation minted; 0 = none yet
	GenFloor     uint64    // newest generation seen signed that the store may not have issued (RaiseGenerationFloor)
	WrittenGen   uint64    // newest generation written to the token directory
	DeliveredGen uint64    // newest generation the supervisor acknowledged
	RotateAt     time.Time // when LatestGen is due for rotation; zero = now

	CreatedAt time.Time
	UpdatedAt time.Time // last change of state, instance or spec
}

// NewSandbox is what CreateSandbox needs.
type NewSandbox struct {
	Name   string
	Driver string
	Spec   json.RawMessage // "{}" when empty
}

const sandboxColumns = `id, name, driver, state, spec, instance_id, run_id,
	latest_gen, written_gen, delivered_gen, rotate_at, created_at, updated_at, gen_floor`

type rowScanner interface {
	Scan(dest ...any) error
}

func scanSandbox(r rowScanner) (Sandbox, error) {
	var sb Sandbox
	var spec string
	var latest, written, delivered, rotateAt, createdAt, updatedAt, floor int64
	err := r.Scan(&sb.ID, &sb.Name, &sb.Driver, &sb.State, &spec, &sb.InstanceID, &sb.RunID,
		&latest, &written, &delivered, &rotateAt, &createdAt, &updatedAt, &floor)
	if err != nil {
		return Sandbox{}, err
	}
	sb.Spec = json.RawMessage(spec)
	sb.LatestGen, sb.WrittenGen, sb.DeliveredGen = uint64(latest), uint64(written), uint64(delivered)
	sb.GenFloor = uint64(floor)
	sb.RotateAt, sb.CreatedAt, sb.UpdatedAt = goTime(rotateAt), goTime(createdAt), goTime(updatedAt)
	return sb, nil
}

// CreateSandbox records a new sandbox in state created with a fresh random id.
func (s *Store) CreateSandbox(ctx context.Context, n NewSandbox) (Sandbox, error) {
	if strings.TrimSpace(n.Name) == "" {
		return Sandbox{}, fmt.Errorf("create sandbox: %w: empty name", ErrInvalid)
	}
	if n.Driver == "" {
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w: empty driver", n.Name, ErrInvalid)
	}
	spec := n.Spec
	if len(spec) == 0 {
		spec = json.RawMessage("{}")
	}
	if !json.Valid(spec) {
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w: spec is not valid JSON", n.Name, ErrInvalid)
	}
	id := newSandboxID()
	now := s.now()
	sb := Sandbox{
		ID: id, Name: n.Name, Driver: n.Driver, State: SandboxCreated, Spec: spec,
		CreatedAt: goTime(dbTime(now)), UpdatedAt: goTime(dbTime(now)),
	}
	err := s.writeTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO sandboxes (id, name, driver, state, spec, created_at, updated_at)
			 VALUES (?, ?, ?, ?, ?, ?, ?)`,
			sb.ID, sb.Name, sb.Driver, sb.State, string(sb.Spec), dbTime(now), dbTime(now))
		return err
	})
	if s.dialect.isUniqueViolation(err) {
		// A 128-bit id collision is not a realistic cause: it is the name.
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w", n.Name, ErrNameTaken)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w", n.Name, err)
	}
	return sb, nil
}

func newSandboxID() string { return randid.New(sandboxIDBytes) }

// GetSandbox returns the sandbox with this id, or ErrNotFound.
func (s *Store) GetSandbox(ctx context.Context, id string) (Sandbox, error) {
	sb, err := scanSandbox(s.reader.QueryRowContext(ctx,
		"SELECT "+sandboxColumns+" FROM sandboxes WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Sandbox{}, fmt.Errorf("get sandbox %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return sb, nil
}

// GetSandboxByName returns the sandbox with this name, or ErrNotFound.
func (s *Store) GetSandboxByName(ctx context.Context, name string) (Sandbox, error) {
	sb, err := scanSandbox(s.reader.QueryRowContext(ctx,
		"SELECT "+sandboxColumns+" FROM sandboxes WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return Sandbox{}, fmt.Errorf("get sandbox named %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("get sandbox named %s: %w", name, err)
	}
	return sb, nil
}

// ListSandboxes returns the sandboxes in any of the given states (all
// sandboxes when none is given), ordered by name.
func (s *Store) ListSandboxes(ctx context.Context, states ...SandboxState) ([]Sandbox, error) {
	query := "SELECT " + sandboxColumns + " FROM sandboxes"
	args := make([]any, 0, len(states))
	if len(states) > 0 {
		marks := make([]string, len(states))
		for i, st := range states {
			if !st.Valid() {
				return nil, fmt.Errorf("list sandboxes: %w: unknown state %q", ErrInvalid, st)
			}
			marks[i] = "?"
			args = append(args, st)
		}
		query += " WHERE state IN (" + strings.Join(marks, ", ") + ")"
	}
	query += " ORDER BY name"
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes %v: %w", states, err)
	}
	defer rows.Close()
	var out []Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes %v: %w", states, err)
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sandboxes %v: %w", states, err)
	}
	return out, nil
}

// UpdateSandboxState records a sandbox's state and the driver's id of its
// current instance.
func (s *Store) UpdateSandboxState(ctx context.Context, id string, state SandboxState, instanceID string) error {
	if !state.Valid() {
		return fmt.Errorf("update sandbox %s: %w: unknown state %q", id, ErrInvalid, state)
	}
	err := s.writeTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx,
			"UPDATE sandboxes SET state = ?, instance_id = ?, updated_at = ? WHERE id = ?",
			state, instanceID, dbTime(s.now()), id)
		return mustAffect(res, err)
	})
	if err != nil {
		return fmt.Errorf("update sandbox %s to %s: %w", id, state, err)
	}
	return nil
}

// RecordRun records the backend's name of the sandbox's current run (a
// pod's UID), once its driver started it.
func (s *Store) RecordRun(ctx context.Context, id, runID string) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		return mustAffect(tx.ExecContext(ctx, "UPDATE sandboxes SET run_id = ?, updated_at = ? WHERE id = ?",
			runID, dbTime(s.now()), id))
	})
	if err != nil {
		return fmt.Errorf("record run %s of sandbox %s: %w", runID, id, err)
	}
	return nil
}

// MarkInstanceStopped records that instance of a running sandbox ended, in
// one conditional statement: a report that arrives after the sandbox was
// started again (as another instance) or stopped changes nothing. It
// reports whether it changed the sandbox.
func (s *Store) MarkInstanceStopped(ctx context.Context, id, instanceID string) (bool, error) {
	var changed bool
	err := s.writeTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx,
			"UPDATE sandboxes SET state = ?, updated_at = ? WHERE id = ? AND instance_id = ? AND state = ?",
			SandboxStopped, dbTime(s.now()), id, instanceID, SandboxRunning)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		changed = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mark instance %s of sandbox %s stopped: %w", instanceID, id, err)
	}
	return changed, nil
}

// DeleteSandbox removes a sandbox and, by cascade, all its generations: its
// tokens become unknown at once. Listeners hear generation 0 of it on
// ChannelGenerations: the replica holding its session ends it.
func (s *Store) DeleteSandbox(ctx context.Context, id string) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		if err := mustAffect(tx.ExecContext(ctx, "DELETE FROM sandboxes WHERE id = ?", id)); err != nil {
			return err
		}
		return tx.d.notify(ctx, tx, ChannelGenerations, []string{id + " 0"})
	})
	if err != nil {
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	}
	return nil
}

// mustAffect turns "no row changed" into ErrNotFound.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
