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
