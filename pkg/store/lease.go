package store

// Leases and fencing: gateway replicas sharing one database elect a leader
// with a lease row whose expiry is in the database's clock, and every write
// the leader makes as leader carries a fence that the write's own
// transaction checks, so a deposed leader (paused, partitioned, slow to
// notice) commits nothing once another holder has the lease.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrFenced: a write run under WithFence found that its holder no longer
// holds the lease (another took it, or it expired); nothing was committed.
var ErrFenced = errors.New("lease lost: write fenced off")

// Lease is a named lease as the database last recorded it.
type Lease struct {
	Name, Holder string
	// Epoch grows by one each time the lease changes hands (or is taken
	// again after it expired); renewals keep it.
	Epoch uint64
	// Expires is in the database's clock (Postgres) or the store's
	// Options.Now (SQLite).
	Expires time.Time
}

// AcquireLease takes the lease name for holder when it is free or expired
// (a new epoch), or renews it when holder holds it (same epoch), for ttl
// from the database's clock. ok is false, with the current lease, when
// another holder has it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return Lease{}, false, fmt.Errorf("acquire lease %q for %q (ttl %v): %w: name, holder and a positive ttl are required",
			name, holder, ttl, ErrInvalid)
	}
	var l Lease
	var ok bool
	err := s.writeTx(ctx, func(tx *txn) error {
		ok = false
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, '', 0, 0) ON CONFLICT (name) DO NOTHING",
			name); err != nil {
			return err
		}
		// A renewal takes the row's weaker lock, which the holder's own
		// fenced writes in flight (FOR KEY SHARE) do not block: a long
		// sweep never delays its leader's renewal.
		cur, now, err := s.readLease(ctx, tx, name, tx.d.forNoKeyUpdate())
		if err != nil {
			return err
		}
		if cur.live(now) && cur.Holder != holder {
			l = cur
			return nil
		}
		if !cur.live(now) {
			// A change of holder waits for every fenced write of the old
			// holder still in flight to end, then decides again: those
			// writes commit before the new epoch starts, or not at all.
			if cur, now, err = s.readLease(ctx, tx, name, tx.d.forUpdate()); err != nil {
				return err
			}
			if cur.live(now) && cur.Holder != holder {
				l = cur
				return nil
			}
			if !cur.live(now) {
				cur.Epoch++
				cur.Holder = holder
			}
		}
		expires := now + ttl.Nanoseconds()
		if _, err := tx.ExecContext(ctx,
			"UPDATE leases SET holder = ?, epoch = ?, expires_at = ? WHERE name = ?",
			cur.Holder, cur.Epoch, expires, name); err != nil {
			return err
		}
		cur.Expires = goTime(expires)
		l, ok = cur, true
		return nil
	})
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease %s for %s: %w", name, holder, err)
	}
	return l, ok, nil
}

// readLease reads the lease row with the given lock suffix, and the clock
// after the lock was granted.
func (s *Store) readLease(ctx context.Context, tx *txn, name, lock string) (Lease, int64, error) {
	l := Lease{Name: name}
	var expires int64
	if err := tx.QueryRowContext(ctx,
		"SELECT holder, epoch, expires_at FROM leases WHERE name = ?"+lock, name,
	).Scan(&l.Holder, &l.Epoch, &expires); err != nil {
		return Lease{}, 0, err
	}
	l.Expires = goTime(expires)
	now, err := s.clock(ctx, tx)
	return l, now, err
}

// live reports whether the lease is held at now (Unix ns).
func (l Lease) live(now int64) bool { return l.Holder != "" && dbTime(l.Expires) > now }

// ReleaseLease gives the lease up at once when holder holds it, so the
// next holder need not wait for it to expire; otherwise it does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx,
			"UPDATE leases SET holder = '', expires_at = 0 WHERE name = ? AND holder = ?", name, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %s for %s: %w", name, holder, err)
	}
	return nil
}

// fence is what WithFence attaches to a context.
type fence struct {
	name, holder string
	epoch        uint64
}

type fenceKey struct{}

// WithFence returns a context under which every write transaction of the
// store first checks, inside the transaction, that holder still holds the
// lease name at epoch and that it has not expired; otherwise the write
// fails with ErrFenced and commits nothing. On Postgres the check holds the
// lease row (FOR KEY SHARE) until commit, so the lease cannot change hands
// between the check and the commit (a change of holder locks the row FOR
// UPDATE, and waits), while the holder's own renewals, which lock it only
// FOR NO KEY UPDATE, do not wait for its writes; SQLite's write
// transaction holds the whole database.
func WithFence(ctx context.Context, name, holder string, epoch uint64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{name: name, holder: holder, epoch: epoch})
}

// checkFence runs first in every write transaction.
func checkFence(ctx context.Context, tx *txn, s *Store) error {
	f, ok := ctx.Value(fenceKey{}).(fence)
	if !ok {
		return nil
	}
	var holder string
	var epoch uint64
	var expires int64
	err := tx.QueryRowContext(ctx,
		"SELECT holder, epoch, expires_at FROM leases WHERE name = ?"+tx.d.forKeyShare(), f.name,
	).Scan(&holder, &epoch, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: lease %s was never taken", ErrFenced, f.name)
	}
	if err != nil {
		return fmt.Errorf("check lease %s: %w", f.name, err)
	}
	now, err := s.clock(ctx, tx)
	if err != nil {
		return fmt.Errorf("check lease %s: %w", f.name, err)
	}
	switch {
	case holder != f.holder || epoch != f.epoch:
		return fmt.Errorf("%w: lease %s is held by %q at epoch %d, not by %q at epoch %d",
			ErrFenced, f.name, holder, epoch, f.holder, f.epoch)
	case expires <= now:
		return fmt.Errorf("%w: lease %s of %q (epoch %d) expired %v ago",
			ErrFenced, f.name, holder, epoch, time.Duration(now-expires))
	}
	return nil
}

// clock is the current time in Unix ns: the database's clock on Postgres
// (so every replica compares against the same clock), Options.Now on
// SQLite.
func (s *Store) clock(ctx context.Context, q querier) (int64, error) {
	expr := s.dialect.clockSQL()
	if expr == "" {
		return dbTime(s.now()), nil
	}
	var ns int64
	if err := q.QueryRowContext(ctx, "SELECT "+expr).Scan(&ns); err != nil {
		return 0, fmt.Errorf("read the database clock: %w", err)
	}
	return ns, nil
}

// nowSQL is the current time for a single statement: the database's clock
// expression on Postgres, a "?" with the Go clock's value on SQLite.
func (s *Store) nowSQL() (string, []any) {
	if expr := s.dialect.clockSQL(); expr != "" {
		return expr, nil
	}
	return "?", []any{dbTime(s.now())}
}
