package store

import (
	"context"
	"fmt"
	"time"
)

// CountExpired counts the running sandboxes whose newest generation has
// expired at now: each one holds no valid token, because rotation failed
// or fell behind. The gateway exports it as a gauge to alert on.
func (s *Store) CountExpired(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM sandboxes s JOIN generations g ON g.sandbox_id = s.id AND g.gen = s.latest_gen
		 WHERE s.state = ? AND g.expires_at <= ?`, SandboxRunning, dbTime(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count sandboxes with an expired token at %v: %w", now, err)
	}
	return n, nil
}

// MarkRunningDue makes every running sandbox due for rotation now, so that
// the next sweep mints for each (and writes and pushes the token with the
// current JWKS): the gateway does it when it publishes a new signing key.
// It returns how many sandboxes it marked.
func (s *Store) MarkRunningDue(ctx context.Context) (int64, error) {
	var n int64
	err := s.writeTx(ctx, func(tx *txn) error {
		// The rows are locked in id order first (Postgres), as
		// NextGenerations locks them, so the two never deadlock.
		res, err := tx.ExecContext(ctx,
			"UPDATE sandboxes SET rotate_at = 0 WHERE id IN (SELECT id FROM sandboxes WHERE state = ? ORDER BY id"+tx.d.forUpdate()+")",
			SandboxRunning)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("mark running sandboxes due for rotation: %w", err)
	}
	return n, nil
}
