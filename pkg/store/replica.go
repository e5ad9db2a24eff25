package store

// The replica registry and session holders: which gateways use this
// database, and which of them holds each sandbox's supervisor session.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Replica modes.
const (
	// ModeSingle: a gateway alone on its store.
	ModeSingle = "single"
	// ModeReplica: one of several gateways sharing a Postgres store.
	ModeReplica = "replica"
)

// ErrReplicaConflict: registering this gateway would break the replica
// rules (a single gateway beside another live gateway, a replica beside a
// live single gateway, or a replica whose cluster settings differ).
var ErrReplicaConflict = errors.New("conflicts with another live gateway on this store")

// ClusterSettings are the values every replica must share: any replica
// re-signs the tokens another minted, from their stored claims, and only
// identical settings give identical bytes.
type ClusterSettings struct {
	Issuer        string
	Audience      string
	TrustDomain   string
	TokenLifetime time.Duration
}

// encode is the settings' stored form: one "name=value" line each.
func (c ClusterSettings) encode() string {
	return strings.Join([]string{
		"issuer=" + c.Issuer,
		"audience=" + c.Audience,
		"trust-domain=" + c.TrustDomain,
		"token-lifetime=" + c.TokenLifetime.String(),
	}, "\n")
}

// differences names each setting of c that differs from other, with both
// values, as "--name VALUE (theirs: VALUE)".
func (c ClusterSettings) differences(other string) []string {
	theirs := make(map[string]string)
	for _, line := range strings.Split(other, "\n") {
		if name, value, ok := strings.Cut(line, "="); ok {
			theirs[name] = value
		}
	}
	var out []string
	for _, line := range strings.Split(c.encode(), "\n") {
		name, value, _ := strings.Cut(line, "=")
		if theirs[name] != value {
			out = append(out, fmt.Sprintf("--%s %s (theirs: %s)", name, strconv.Quote(value), strconv.Quote(theirs[name])))
		}
	}
	return out
}

// Replica is a gateway registered in the store.
type Replica struct {
	ID string
	// AdminAddr is host:port of its operator API (TLS); "" for a single
	// gateway.
	AdminAddr string
	// Mode is ModeSingle or ModeReplica.
	Mode string
	// Settings must be equal across live replicas (ModeReplica only).
	Settings ClusterSettings
	// Origin is where the gateway runs: its host and state directory,
	// which one gateway at a time holds (the state directory's lock). A
	// live registration of the same origin is this gateway's predecessor,
	// dead since it let go of the lock: RegisterReplica replaces it.
	Origin string
	// Expires is when the registration lapses unless heartbeated, in the
	// database's clock; filled in by the store.
	Expires time.Time
}

// RegisterReplica records r (or refreshes its row) live for ttl. It refuses
// with ErrReplicaConflict, saying why, a single gateway while another
// gateway is live, a replica while a single gateway is live, and a replica
// whose Settings differ from a live replica's. A live registration of r's
// Origin is r's dead predecessor (a crash, then a restart within ttl): it
// is removed, with its session holders, instead of refused.
func (s *Store) RegisterReplica(ctx context.Context, r Replica, ttl time.Duration) error {
	if r.ID == "" || (r.Mode != ModeSingle && r.Mode != ModeReplica) || ttl <= 0 {
		return fmt.Errorf("register replica %q (mode %q, ttl %v): %w: an id, mode single or replica and a positive ttl are required",
			r.ID, r.Mode, ttl, ErrInvalid)
	}
	err := s.writeTx(ctx, func(tx *txn) error {
		if err := tx.d.lockReplicas(ctx, tx); err != nil {
			return fmt.Errorf("lock replicas: %w", err)
		}
		now, err := s.clock(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx,
			"SELECT id, admin_addr, mode, settings, origin FROM replicas WHERE expires_at > ? AND id <> ? ORDER BY id", now, r.ID)
		if err != nil {
			return err
		}
		var conflict error
		var predecessors []string
		for rows.Next() && conflict == nil {
			var o Replica
			var settings string
			if err := rows.Scan(&o.ID, &o.AdminAddr, &o.Mode, &settings, &o.Origin); err != nil {
				rows.Close()
				return err
			}
			if r.Origin != "" && o.Origin == r.Origin {
				predecessors = append(predecessors, o.ID)
				continue
			}
			conflict = r.conflict(o, settings)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
		if conflict != nil {
			return conflict
		}
		for _, id := range predecessors {
			if err := removeReplica(ctx, tx, id); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO replicas (id, admin_addr, mode, settings, origin, expires_at) VALUES (?, ?, ?, ?, ?, ?)
			 ON CONFLICT (id) DO UPDATE SET admin_addr = excluded.admin_addr, mode = excluded.mode,
			   settings = excluded.settings, origin = excluded.origin, expires_at = excluded.expires_at`,
			r.ID, r.AdminAddr, r.Mode, r.Settings.encode(), r.Origin, now+ttl.Nanoseconds())
		return err
	})
	if err != nil {
		return fmt.Errorf("register gateway %s (%s): %w", r.ID, r.Mode, err)
	}
	return nil
}

// conflict says why r may not run beside the live gateway o, nil when it
// may.
func (r Replica) conflict(o Replica, settings string) error {
	switch {
	case r.Mode == ModeSingle:
		return fmt.Errorf("%w: gateway %s (%s mode) is live on this store; a gateway without --replica-advertise must be alone: stop it, or run every gateway with --replica-advertise",
			ErrReplicaConflict, o.ID, o.Mode)
	case o.Mode == ModeSingle:
		return fmt.Errorf("%w: gateway %s runs without --replica-advertise on this store; stop it, or restart it with --replica-advertise",
			ErrReplicaConflict, o.ID)
	}
	if diff := r.Settings.differences(settings); len(diff) > 0 {
		return fmt.Errorf("%w: replica %s uses other settings: %s; replicas re-sign each other's tokens, so every replica needs the same values",
			ErrReplicaConflict, o.ID, strings.Join(diff, ", "))
	}
	return nil
}

// HeartbeatReplica keeps the registration of id live for ttl more. It
// fails with ErrNotFound when the row is gone (removed by an operator):
// register again.
func (s *Store) HeartbeatReplica(ctx context.Context, id string, ttl time.Duration) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		now, err := s.clock(ctx, tx)
		if err != nil {
			return err
		}
		return mustAffect(tx.ExecContext(ctx,
			"UPDATE replicas SET expires_at = ? WHERE id = ?", now+ttl.Nanoseconds(), id))
	})
	if err != nil {
		return fmt.Errorf("heartbeat gateway %s: %w", id, err)
	}
	return nil
}

// RemoveReplica deletes the registration of id and the session holders
// naming it (a gateway stopping cleanly).
func (s *Store) RemoveReplica(ctx context.Context, id string) error {
	err := s.writeTx(ctx, func(tx *txn) error { return removeReplica(ctx, tx, id) })
	if err != nil {
		return fmt.Errorf("remove gateway %s: %w", id, err)
	}
	return nil
}

func removeReplica(ctx context.Context, tx *txn, id string) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM session_holders WHERE replica_id = ?", id); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "DELETE FROM replicas WHERE id = ?", id)
	return err
}

// LiveReplicas returns the gateways whose registration has not lapsed, by
// id.
func (s *Store) LiveReplicas(ctx context.Context) ([]Replica, error) {
	now, args := s.nowSQL()
	rows, err := s.reader.QueryContext(ctx,
		"SELECT id, admin_addr, mode, settings, origin, expires_at FROM replicas WHERE expires_at > "+now+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("list live gateways: %w", err)
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		r, err := scanReplica(rows)
		if err != nil {
			return nil, fmt.Errorf("list live gateways: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list live gateways: %w", err)
	}
	return out, nil
}

func scanReplica(r rowScanner) (Replica, error) {
	var out Replica
	var settings string
	var expires int64
	if err := r.Scan(&out.ID, &out.AdminAddr, &out.Mode, &settings, &out.Origin, &expires); err != nil {
		return Replica{}, err
	}
	out.Settings = decodeSettings(settings)
	out.Expires = goTime(expires)
	return out, nil
}

// decodeSettings reads what encode wrote; unknown lines are ignored.
func decodeSettings(s string) ClusterSettings {
	var c ClusterSettings
	for _, line := range strings.Split(s, "\n") {
		name, value, _ := strings.Cut(line, "=")
		switch name {
		case "issuer":
			c.Issuer = value
		case "audience":
			c.Audience = value
		case "trust-domain":
			c.TrustDomain = value
		case "token-lifetime":
			c.TokenLifetime, _ = time.ParseDuration(value)
		}
	}
	return c
}

// SetSessionHolders records replicaID as the holder of the sessions of
// sandboxIDs, in batches of rowBatch rows per statement. Sandboxes that do
// not exist are skipped.
func (s *Store) SetSessionHolders(ctx context.Context, replicaID string, sandboxIDs []string) error {
	// WHERE before ON CONFLICT: SQLite needs it to parse the upsert.
	err := s.holdersByBatch(ctx, replicaID, sandboxIDs, func(n int) string {
		return "INSERT INTO session_holders (sandbox_id, replica_id) SELECT id, ? FROM sandboxes WHERE id IN (" +
			placeholders(n, 1) + ") ON CONFLICT (sandbox_id) DO UPDATE SET replica_id = excluded.replica_id"
	})
	if err != nil {
		return fmt.Errorf("record %s as session holder of %d sandboxes: %w", replicaID, len(sandboxIDs), err)
	}
	return nil
}

// ClearSessionHolders forgets replicaID as the holder of sandboxIDs; rows
// that name another replica (the session moved there) stay.
func (s *Store) ClearSessionHolders(ctx context.Context, replicaID string, sandboxIDs []string) error {
	err := s.holdersByBatch(ctx, replicaID, sandboxIDs, func(n int) string {
		return "DELETE FROM session_holders WHERE replica_id = ? AND sandbox_id IN (" + placeholders(n, 1) + ")"
	})
	if err != nil {
		return fmt.Errorf("clear %s as session holder of %d sandboxes: %w", replicaID, len(sandboxIDs), err)
	}
	return nil
}

// holdersByBatch runs, in one write transaction, the statement query(n)
// for every batch of up to rowBatch distinct sandboxIDs, with replicaID
// and then the batch's ids as its arguments.
func (s *Store) holdersByBatch(ctx context.Context, replicaID string, sandboxIDs []string, query func(n int) string) error {
	ids := uniqueIDs(sandboxIDs)
	if len(ids) == 0 {
		return nil
	}
	return s.writeTx(ctx, func(tx *txn) error {
		for start := 0; start < len(ids); start += rowBatch {
			batch := ids[start:min(start+rowBatch, len(ids))]
			args := make([]any, 0, len(batch)+1)
			args = append(args, replicaID)
			for _, id := range batch {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, query(len(batch)), args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// SessionHolder returns the live replica that holds the session of
// sandboxID; ok is false when none does (no row, or its replica lapsed).
func (s *Store) SessionHolder(ctx context.Context, sandboxID string) (Replica, bool, error) {
	now, args := s.nowSQL()
	row := s.reader.QueryRowContext(ctx,
		`SELECT r.id, r.admin_addr, r.mode, r.settings, r.origin, r.expires_at
		 FROM session_holders h JOIN replicas r ON r.id = h.replica_id
		 WHERE h.sandbox_id = ? AND r.expires_at > `+now, append([]any{sandboxID}, args...)...)
	r, err := scanReplica(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Replica{}, false, nil
	}
	if err != nil {
		return Replica{}, false, fmt.Errorf("find the session holder of sandbox %s: %w", sandboxID, err)
	}
	return r, true, nil
}

// SessionHolders returns the live replica holding each session that one
// holds, by sandbox id: SessionHolder for a whole listing in one query.
func (s *Store) SessionHolders(ctx context.Context) (map[string]Replica, error) {
	now, args := s.nowSQL()
	rows, err := s.reader.QueryContext(ctx,
		`SELECT h.sandbox_id, r.id, r.admin_addr, r.mode, r.settings, r.origin, r.expires_at
		 FROM session_holders h JOIN replicas r ON r.id = h.replica_id
		 WHERE r.expires_at > `+now, args...)
	if err != nil {
		return nil, fmt.Errorf("list session holders: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Replica)
	for rows.Next() {
		var id, settings string
		var r Replica
		var expires int64
		if err := rows.Scan(&id, &r.ID, &r.AdminAddr, &r.Mode, &settings, &r.Origin, &expires); err != nil {
			return nil, fmt.Errorf("list session holders: %w", err)
		}
		r.Settings, r.Expires = decodeSettings(settings), goTime(expires)
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list session holders: %w", err)
	}
	return out, nil
}
