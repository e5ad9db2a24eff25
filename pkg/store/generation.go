package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// acceptedGenerations is how many of a sandbox's newest generations
// authenticate: the newest, and the one before it, which a supervisor may still hold while the newest is on its
// way to it.
const acceptedGenerations = 2

// Generation is the metadata of one minted token of a sandbox. The store
// never holds the token itself: it lives in the sandbox's token directory
// (a tmpfs) and the supervisor's memory.
type Generation struct {
	SandboxID string
	Gen       uint64 // 1, 2, 3... strictly increasing per sandbox
	JTI       string // unique across all sandboxes
	KID       string // the signing key
	IssuedAt  time.Time
	ExpiresAt time.Time
	RotateAt  time.Time // when the gateway should mint the next one
	Written   bool      // written into the sandbox's token directory
}

// Minted is what a MintFunc returns: the metadata of a signed token. The
// token itself stays with the caller.
type Minted struct {
	JTI       string
	KID       string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// RotateAt is the caller's rotation point (half the lifetime plus
	// jitter); DueForRotation returns the sandbox once it has passed.
	RotateAt time.Time
}

// MintFunc signs the token of generation gen of a sandbox. It runs inside
// the store's write transaction, so it must be quick and must not call the
// store. An error aborts the whole NextGenerations call.
type MintFunc func(sandboxID string, gen uint64) (Minted, error)

func (m Minted) validate() error {
	switch {
	case m.JTI == "":
		return errors.New("empty jti")
	case m.KID == "":
		return errors.New("empty kid")
	case m.IssuedAt.IsZero():
		return errors.New("zero issued-at")
	case !m.ExpiresAt.After(m.IssuedAt):
		return fmt.Errorf("expires at %v, not after issued at %v", m.ExpiresAt, m.IssuedAt)
	case m.RotateAt.IsZero() || m.RotateAt.After(m.ExpiresAt):
		return fmt.Errorf("rotate at %v: must be set and not after expiry %v", m.RotateAt, m.ExpiresAt)
	}
	return nil
}

// NextGenerations mints and commits the next generation of every listed
// sandbox in one transaction, and returns them only after the commit: a
// token never leaves the gateway before its generation is durable, so a
// crash can never hand out one generation twice.
//
// For each sandbox it reads the newest generation, calls mint with the
// next one, and inserts its metadata. Duplicate ids are minted once. Sandboxes that do not exist
// (deleted since the caller listed them) are skipped: the generations of the
// others are still committed and returned, together with a
// *MissingSandboxesError naming the skipped ids. Any other failure, mint
// errors included, rolls everything back and returns no generations.
//
// The result is in the order of ids.
func (s *Store) NextGenerations(ctx context.Context, ids []string, mint MintFunc) ([]Generation, error) {
	ids = uniqueIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Generation
	var missing []string
	err := s.writeTx(ctx, func(tx *txn) error {
		out, missing = make([]Generation, 0, len(ids)), nil
		// The statements run without ctx's cancellation: watching it costs
		// the driver a goroutine per statement. Cancellation is checked
		// once per sandbox instead.
		quiet := context.WithoutCancel(ctx)
		// The row locks (Postgres) hold every other writer of these
		// sandboxes until commit: the counters read here are the ones
		// advanced below.
		counters, err := lockSandboxes(quiet, tx, ids)
		if err != nil {
			return err
		}
		byJTI := make(map[string]string, len(ids))
		kids := make(map[string]bool)
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, ok := counters[id]
			if !ok {
				missing = append(missing, id)
				continue
			}
			// Above the floor too: generations up to it were issued by a
			// store this one does not remember (a backup restored over it).
			gen := max(c.latest, c.floor) + 1
			m, err := mint(id, uint64(gen))
			if err != nil {
				return fmt.Errorf("mint generation %d of sandbox %s: %w", gen, id, err)
			}
			if err := m.validate(); err != nil {
				return fmt.Errorf("mint generation %d of sandbox %s: %w: %w", gen, id, ErrInvalid, err)
			}
			if other, dup := byJTI[m.JTI]; dup {
				return fmt.Errorf("mint generation %d of sandbox %s: %w: jti %s also minted for sandbox %s",
					gen, id, ErrInvalid, m.JTI, other)
			}
			byJTI[m.JTI] = id
			if !kids[m.KID] {
				if err := checkKID(quiet, tx, m.KID); err != nil {
					return fmt.Errorf("mint generation %d of sandbox %s: %w", gen, id, err)
				}
				kids[m.KID] = true
			}
			out = append(out, Generation{
				SandboxID: id, Gen: uint64(gen), JTI: m.JTI, KID: m.KID,
				IssuedAt: goTime(dbTime(m.IssuedAt)), ExpiresAt: goTime(dbTime(m.ExpiresAt)),
				RotateAt: goTime(dbTime(m.RotateAt)),
			})
		}
		for start := 0; start < len(out); start += rowBatch {
			batch := out[start:min(start+rowBatch, len(out))]
			if err := insertGenerations(quiet, tx, batch); err != nil {
				return err
			}
			if err := advanceSandboxes(quiet, tx, batch); err != nil {
				return err
			}
		}
		// Other replicas hear of each generation when it commits.
		payloads := make([]string, len(out))
		for i, g := range out {
			payloads[i] = g.SandboxID + " " + strconv.FormatUint(g.Gen, 10)
		}
		return tx.d.notify(quiet, tx, ChannelGenerations, payloads)
	})
	if err != nil {
		return nil, fmt.Errorf("next generations of %d sandboxes: %w", len(ids), err)
	}
	if len(missing) > 0 {
		return out, &MissingSandboxesError{IDs: missing}
	}
	return out, nil
}

// rowBatch is how many rows one statement reads, locks, inserts or
// updates: one statement for many rows costs little more than one for a
// single row. 500 rows of 7 values stay far below both databases' limits
// on a statement's parameters (32,766 for SQLite, 65,535 for Postgres).
const rowBatch = 500

// counters are a sandbox's generation counters as a write read them.
type counters struct {
	latest, floor int64
}

// lockSandboxes reads the generation counters of the given sandboxes and
// locks their rows until commit (Postgres), in id order whatever the
// caller's order, so two gateways writing overlapping sets of sandboxes
// queue instead of deadlocking. SQLite's write transaction holds the whole
// database already. Sandboxes that do not exist are absent from the result.
func lockSandboxes(ctx context.Context, tx *txn, ids []string) (map[string]counters, error) {
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	out := make(map[string]counters, len(ids))
	for start := 0; start < len(sorted); start += rowBatch {
		batch := sorted[start:min(start+rowBatch, len(sorted))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		// Postgres locks the rows as the sort returns them: in id order.
		rows, err := tx.QueryContext(ctx, "SELECT id, latest_gen, gen_floor FROM sandboxes WHERE id IN ("+
			placeholders(len(batch), 1)+") ORDER BY id"+tx.d.forUpdate(), args...)
		if err != nil {
			return nil, fmt.Errorf("lock %d sandboxes: %w", len(batch), err)
		}
		for rows.Next() {
			var id string
			var c counters
			if err := rows.Scan(&id, &c.latest, &c.floor); err != nil {
				rows.Close()
				return nil, fmt.Errorf("lock %d sandboxes: %w", len(batch), err)
			}
			out[id] = c
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("lock %d sandboxes: %w", len(batch), err)
		}
	}
	return out, nil
}

// placeholders is n rows of width "?" placeholders, for the VALUES of an
// INSERT or (width 1) an IN list: "(?, ?), (?, ?)" or "?, ?".
func placeholders(n, width int) string {
	if width == 1 {
		return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
	}
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

// checkKID fails with ErrInvalid unless the key set holds kid, so that a
// bad kid is reported with the sandbox it was minted for rather than as a
// foreign key violation of a whole batch.
func checkKID(ctx context.Context, tx *txn, kid string) error {
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM signing_keys WHERE kid = ?", kid).Scan(&n); err != nil {
		return fmt.Errorf("look up kid %s: %w", kid, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: unknown kid %s", ErrInvalid, kid)
	}
	return nil
}

// insertGenerations inserts the metadata of gens in one statement.
func insertGenerations(ctx context.Context, tx *txn, gens []Generation) error {
	args := make([]any, 0, 7*len(gens))
	for _, g := range gens {
		args = append(args, g.SandboxID, int64(g.Gen), g.JTI, g.KID,
			dbTime(g.IssuedAt), dbTime(g.ExpiresAt), dbTime(g.RotateAt))
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO generations
		(sandbox_id, gen, jti, kid, issued_at, expires_at, rotate_at) VALUES `+placeholders(len(gens), 7), args...)
	if tx.d.isUniqueViolation(err) {
		return fmt.Errorf("insert generations of sandboxes %s to %s: %w: a jti is already used",
			gens[0].SandboxID, gens[len(gens)-1].SandboxID, ErrInvalid)
	}
	if err != nil {
		return fmt.Errorf("insert generations of sandboxes %s to %s: %w", gens[0].SandboxID, gens[len(gens)-1].SandboxID, err)
	}
	return nil
}

// advanceSandboxes moves the counter of each sandbox of gens to its
// newest generation, just inserted, and copies that generation's rotation
// point onto its row, in one statement.
func advanceSandboxes(ctx context.Context, tx *txn, gens []Generation) error {
	args := make([]any, len(gens))
	for i, g := range gens {
		args[i] = g.SandboxID
	}
	if _, err := tx.ExecContext(ctx, advanceQuery(len(gens)), args...); err != nil {
		return fmt.Errorf("advance sandboxes %s to %s: %w", gens[0].SandboxID, gens[len(gens)-1].SandboxID, err)
	}
	return nil
}

// advanceQuery sets latest_gen and rotate_at of n sandboxes from their
// newest generation. Each subquery is one descent of the generations
// primary key (sandbox_id, gen); an UPDATE ... FROM (VALUES ...) would say
// it more directly, but SQLite's planner may then scan every generation.
func advanceQuery(n int) string {
	return `UPDATE sandboxes SET
		latest_gen = (SELECT MAX(g.gen) FROM generations g WHERE g.sandbox_id = sandboxes.id),
		rotate_at = (SELECT g.rotate_at FROM generations g WHERE g.sandbox_id = sandboxes.id AND g.gen =
			(SELECT MAX(h.gen) FROM generations h WHERE h.sandbox_id = sandboxes.id))
		WHERE id IN (` + placeholders(n, 1) + `)`
}

// writtenGenQuery raises written_gen of n sandboxes to their newest
// generation marked written; it never goes down.
func writtenGenQuery(n int) string {
	const newestWritten = `(SELECT MAX(g.gen) FROM generations g WHERE g.sandbox_id = sandboxes.id AND g.written = 1)`
	return `UPDATE sandboxes SET written_gen = ` + newestWritten + `
		WHERE id IN (` + placeholders(n, 1) + `) AND written_gen < ` + newestWritten
}

// RaiseGenerationFloor records that generation seen of the sandbox exists,
// signed by the gateway's key, although this store may never have issued
// it (a backup restored over the store, with tokens minted since still in
// the sandbox's directory or its supervisor's hands). Once it returns, every
// generation NextGenerations mints for the sandbox is above seen, so no
// generation number is issued twice. It reports whether the floor moved: a
// seen at or below the counter (or the floor) changes nothing and writes
// nothing. An unknown sandbox is ErrNotFound.
func (s *Store) RaiseGenerationFloor(ctx context.Context, sandboxID string, seen uint64) (bool, error) {
	if seen > math.MaxInt64 {
		return false, fmt.Errorf("raise generation floor of sandbox %s to %d: %w: beyond the counter's range", sandboxID, seen, ErrInvalid)
	}
	// Read first, through the reader pool: the common answer is "nothing
	// to do", and it must not queue behind a rotation sweep's write.
	var latest, floor int64
	err := s.reader.QueryRowContext(ctx, "SELECT latest_gen, gen_floor FROM sandboxes WHERE id = ?", sandboxID).Scan(&latest, &floor)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("raise generation floor of sandbox %s: %w", sandboxID, ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("raise generation floor of sandbox %s to %d: %w", sandboxID, seen, err)
	}
	if int64(seen) <= max(latest, floor) {
		return false, nil
	}
	var raised bool
	// One conditional statement: on Postgres it waits for the row lock of
	// a concurrent NextGenerations and re-checks the condition after it.
	err = s.writeTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx,
			"UPDATE sandboxes SET gen_floor = ? WHERE id = ? AND gen_floor < ? AND latest_gen < ?",
			int64(seen), sandboxID, int64(seen), int64(seen))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		raised = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("raise generation floor of sandbox %s to %d: %w", sandboxID, seen, err)
	}
	return raised, nil
}

func uniqueIDs(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	return out
}

const generationColumns = "sandbox_id, gen, jti, kid, issued_at, expires_at, rotate_at, written"

func scanGeneration(r rowScanner) (Generation, error) {
	var g Generation
	var gen, issued, expires, rotate int64
	var written int64
	if err := r.Scan(&g.SandboxID, &gen, &g.JTI, &g.KID, &issued, &expires, &rotate, &written); err != nil {
		return Generation{}, err
	}
	g.Gen = uint64(gen)
	g.IssuedAt, g.ExpiresAt, g.RotateAt = goTime(issued), goTime(expires), goTime(rotate)
	g.Written = written != 0
	return g, nil
}

// LatestGeneration returns the metadata of the sandbox's newest generation.
// It fails with ErrNotFound for an unknown sandbox and ErrNoGeneration when
// none was minted yet.
func (s *Store) LatestGeneration(ctx context.Context, sandboxID string) (Generation, error) {
	gens, err := s.newestGenerations(ctx, sandboxID, 1)
	if err != nil {
		return Generation{}, fmt.Errorf("latest generation of sandbox %s: %w", sandboxID, err)
	}
	if len(gens) == 0 {
		return Generation{}, fmt.Errorf("latest generation of sandbox %s: %w", sandboxID, ErrNoGeneration)
	}
	return gens[0], nil
}

// AcceptableGenerations returns the generations that still authenticate:
// the two newest (fewer if fewer were minted), newest first. It fails with
// ErrNotFound for an unknown sandbox.
func (s *Store) AcceptableGenerations(ctx context.Context, sandboxID string) ([]Generation, error) {
	gens, err := s.newestGenerations(ctx, sandboxID, acceptedGenerations)
	if err != nil {
		return nil, fmt.Errorf("acceptable generations of sandbox %s: %w", sandboxID, err)
	}
	return gens, nil
}

func (s *Store) newestGenerations(ctx context.Context, sandboxID string, n int) ([]Generation, error) {
	var out []Generation
	err := s.readTx(ctx, func(tx *txn) error {
		var latest int64
		err := tx.QueryRowContext(ctx, "SELECT latest_gen FROM sandboxes WHERE id = ?", sandboxID).Scan(&latest)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx,
			"SELECT "+generationColumns+" FROM generations WHERE sandbox_id = ? AND gen > ? ORDER BY gen DESC",
			sandboxID, latest-int64(n))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			g, err := scanGeneration(rows)
			if err != nil {
				return err
			}
			out = append(out, g)
		}
		return rows.Err()
	})
	return out, err
}

// Verdict says whether a presented token generation may authenticate.
type Verdict string

// Verdicts of IsAcceptable.
const (
	// VerdictAccepted: one of the two newest generations, with its jti.
	VerdictAccepted Verdict = "accepted"
	// VerdictUnknownSandbox: no such sandbox (never created, or deleted).
	VerdictUnknownSandbox Verdict = "unknown sandbox"
	// VerdictSuperseded: older than the two newest generations.
	VerdictSuperseded Verdict = "superseded"
	// VerdictNotIssued: the store never issued this generation with this
	// jti (for instance, the store was restored from an older backup).
	VerdictNotIssued Verdict = "not issued"
)

// IsAcceptable applies the revocation rule: only the two newest generations
// of an existing sandbox authenticate, each only with the jti it was issued
// with. Signature and expiry are the token validator's job. The error is
// only for a store failure.
func (s *Store) IsAcceptable(ctx context.Context, sandboxID string, gen uint64, jti string) (Verdict, error) {
	if gen == 0 || gen > math.MaxInt64 {
		// Still tell an unknown sandbox apart.
		if _, err := s.GetSandbox(ctx, sandboxID); errors.Is(err, ErrNotFound) {
			return VerdictUnknownSandbox, nil
		} else if err != nil {
			return "", fmt.Errorf("check generation %d of sandbox %s: %w", gen, sandboxID, err)
		}
		return VerdictNotIssued, nil
	}
	var latest int64
	var issuedJTI sql.NullString
	err := s.reader.QueryRowContext(ctx,
		`SELECT s.latest_gen, g.jti FROM sandboxes s
		 LEFT JOIN generations g ON g.sandbox_id = s.id AND g.gen = ?
		 WHERE s.id = ?`, int64(gen), sandboxID).Scan(&latest, &issuedJTI)
	if errors.Is(err, sql.ErrNoRows) {
		return VerdictUnknownSandbox, nil
	}
	if err != nil {
		return "", fmt.Errorf("check generation %d of sandbox %s: %w", gen, sandboxID, err)
	}
	switch {
	case int64(gen) > latest:
		return VerdictNotIssued, nil
	case int64(gen) <= latest-acceptedGenerations:
		return VerdictSuperseded, nil
	case !issuedJTI.Valid || issuedJTI.String != jti:
		return VerdictNotIssued, nil
	}
	return VerdictAccepted, nil
}

// RecordWritten notes that generation gen was written into the sandbox's
// token directory. WrittenGen never goes down: a late report of an older
// write is a no-op. A generation that was never issued is ErrUnknownGeneration.
// An unknown sandbox is ErrNotFound.
func (s *Store) RecordWritten(ctx context.Context, sandboxID string, gen uint64) error {
	gone, err := s.RecordWrittenBatch(ctx, map[string]uint64{sandboxID: gen})
	if err == nil && len(gone) > 0 {
		err = fmt.Errorf("record generation %d of sandbox %s written: %w", gen, sandboxID, ErrNotFound)
	}
	return err
}

// RecordWrittenBatch records, in one transaction, the generation written
// into each sandbox's token directory after a sweep. A sandbox deleted
// meanwhile is skipped, and returned in gone: its directory, made again by
// the write, is the caller's to remove. A generation never issued fails
// the batch.
func (s *Store) RecordWrittenBatch(ctx context.Context, written map[string]uint64) (gone []string, err error) {
	if len(written) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(written))
	for id := range written {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	err = s.writeTx(ctx, func(tx *txn) error {
		gone = nil
		quiet := context.WithoutCancel(ctx)
		// Row locks in id order, like NextGenerations, so theirs never
		// deadlock with these.
		counters, err := lockSandboxes(quiet, tx, ids)
		if err != nil {
			return err
		}
		type write struct {
			id  string
			gen int64
		}
		writes := make([]write, 0, len(ids))
		for _, id := range ids {
			gen := written[id]
			c, ok := counters[id]
			switch {
			case !ok:
				gone = append(gone, id) // deleted meanwhile
				continue
			case gen == 0 || gen > uint64(c.latest):
				return fmt.Errorf("sandbox %s generation %d: %w: newest generation is %d", id, gen, ErrUnknownGeneration, c.latest)
			}
			writes = append(writes, write{id, int64(gen)})
		}
		for start := 0; start < len(writes); start += rowBatch {
			batch := writes[start:min(start+rowBatch, len(writes))]
			pairs := make([]any, 0, 2*len(batch))
			ids := make([]any, len(batch))
			for i, w := range batch {
				pairs = append(pairs, w.id, w.gen)
				ids[i] = w.id
			}
			// (sandbox_id, gen) IN (VALUES ...) is a primary key lookup per
			// pair on both databases.
			// The cast: Postgres types a bare parameter in VALUES as text.
			if _, err := tx.ExecContext(quiet, `UPDATE generations SET written = 1
				WHERE (sandbox_id, gen) IN (VALUES `+strings.TrimSuffix(strings.Repeat("(?, CAST(? AS BIGINT)), ", len(batch)), ", ")+`)`,
				pairs...); err != nil {
				return err
			}
			if _, err := tx.ExecContext(quiet, writtenGenQuery(len(batch)), ids...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %d written generation(s): %w", len(written), err)
	}
	return gone, nil
}

// RecordDelivered notes that the supervisor acknowledged generation gen.
// DeliveredGen never goes down: an older acknowledgement is a no-op. A
// generation that was never issued is ErrUnknownGeneration.
func (s *Store) RecordDelivered(ctx context.Context, sandboxID string, gen uint64) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		if err := checkIssued(ctx, tx, sandboxID, gen); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx,
			"UPDATE sandboxes SET delivered_gen = ? WHERE id = ? AND delivered_gen < ?",
			int64(gen), sandboxID, int64(gen))
		return err
	})
	if err != nil {
		return fmt.Errorf("record generation %d of sandbox %s delivered: %w", gen, sandboxID, err)
	}
	return nil
}

// checkIssued fails unless the sandbox exists and gen is one of its
// generations (1..latest). It locks the sandbox's row (Postgres) first, as
// NextGenerations does, before the caller touches its generations.
func checkIssued(ctx context.Context, tx *txn, sandboxID string, gen uint64) error {
	var latest int64
	err := tx.QueryRowContext(ctx, "SELECT latest_gen FROM sandboxes WHERE id = ?"+tx.d.forUpdate(), sandboxID).Scan(&latest)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if gen == 0 || gen > uint64(latest) {
		return fmt.Errorf("%w: newest generation is %d", ErrUnknownGeneration, latest)
	}
	return nil
}

// PendingDelivery is a sandbox whose newest generation the supervisor has
// not acknowledged yet.
type PendingDelivery struct {
	SandboxID    string
	State        SandboxState
	LatestGen    uint64
	DeliveredGen uint64
}

// PendingDeliveries lists every sandbox whose newest generation is newer
// than the one its supervisor acknowledged, ordered by id.
func (s *Store) PendingDeliveries(ctx context.Context) ([]PendingDelivery, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT id, state, latest_gen, delivered_gen FROM sandboxes
		 WHERE latest_gen > delivered_gen ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("pending deliveries: %w", err)
	}
	defer rows.Close()
	var out []PendingDelivery
	for rows.Next() {
		var p PendingDelivery
		var latest, delivered int64
		if err := rows.Scan(&p.SandboxID, &p.State, &latest, &delivered); err != nil {
			return nil, fmt.Errorf("pending deliveries: %w", err)
		}
		p.LatestGen, p.DeliveredGen = uint64(latest), uint64(delivered)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending deliveries: %w", err)
	}
	return out, nil
}

// Due is a sandbox whose token reached its rotation point.
type Due struct {
	ID       string
	RotateAt time.Time // zero when the sandbox has no generation yet
}

// DueForRotation returns the running sandboxes whose newest generation
// reached its rotation point at now, and the running sandboxes that have
// none yet, most overdue first. It is one range scan of the (state,
// rotate_at) index.
func (s *Store) DueForRotation(ctx context.Context, now time.Time) ([]Due, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT id, rotate_at FROM sandboxes WHERE state = ? AND rotate_at <= ? ORDER BY rotate_at, id`,
		SandboxRunning, dbTime(now))
	if err != nil {
		return nil, fmt.Errorf("sandboxes due for rotation at %v: %w", now, err)
	}
	defer rows.Close()
	var due []Due
	for rows.Next() {
		var d Due
		var at int64
		if err := rows.Scan(&d.ID, &at); err != nil {
			return nil, fmt.Errorf("sandboxes due for rotation at %v: %w", now, err)
		}
		if at != 0 {
			d.RotateAt = goTime(at)
		}
		due = append(due, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sandboxes due for rotation at %v: %w", now, err)
	}
	return due, nil
}

// IssuedAfter returns, by id, the running sandboxes whose newest
// generation was issued after t: minted while the clock read later than
// it does now (it was set back since). Verifiers refuse such a token as
// not yet valid until the clock catches up, and its rotation point, as far
// ahead, would leave it in place all that while. It reads every running
// sandbox's newest generation: the gateway asks at start and after it saw
// its clock go back, not at every sweep.
func (s *Store) IssuedAfter(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT s.id FROM sandboxes s JOIN generations g ON g.sandbox_id = s.id AND g.gen = s.latest_gen
		 WHERE s.state = ? AND g.issued_at > ? ORDER BY s.id`,
		SandboxRunning, dbTime(t))
	if err != nil {
		return nil, fmt.Errorf("sandboxes whose newest generation was issued after %v: %w", t, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sandboxes whose newest generation was issued after %v: %w", t, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sandboxes whose newest generation was issued after %v: %w", t, err)
	}
	return ids, nil
}

// PruneGenerations deletes the metadata of generations that expired before
// the given time and are not among their sandbox's two newest, and returns
// how many it deleted. Without it, history grows by one row per sandbox per
// rotation. Generations stay strictly increasing: the newest is never pruned.
func (s *Store) PruneGenerations(ctx context.Context, expiredBefore time.Time) (int64, error) {
	var n int64
	err := s.writeTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx,
			`DELETE FROM generations WHERE expires_at < ? AND gen <=
			 (SELECT s.latest_gen FROM sandboxes s WHERE s.id = generations.sandbox_id) - ?`,
			dbTime(expiredBefore), acceptedGenerations)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune generations expired before %v: %w", expiredBefore, err)
	}
	return n, nil
}
