package store

// The store speaks two SQL dialects: SQLite (a file under the state
// directory, the default) and Postgres (a DSN, for a shared database). The
// queries in the other files are plain SQL with "?" placeholders, shared by
// both; a dialect supplies what differs: how a placeholder is written, its
// migrations, row locks, the checks at open and error classification.
// sqlite.go and postgres.go hold the two implementations.

import (
	"context"
	"database/sql"
	"io/fs"
	"strconv"
	"strings"
)

// dialect is what differs between the store's databases.
type dialect interface {
	// name is "sqlite" or "postgres", for errors and logs.
	name() string
	// rebind rewrites a query written with "?" placeholders.
	rebind(query string) string
	// migrations is the directory of NNNN_description.sql files.
	migrations() fs.FS
	// forUpdate is the suffix that makes a SELECT lock the rows it reads
	// until commit ("" where the transaction already holds the write lock).
	forUpdate() string
	// readTxOptions start a read transaction that sees one snapshot.
	readTxOptions() *sql.TxOptions
	// lockMigrations serialises migrations across processes; it runs first
	// in every migration transaction.
	lockMigrations(ctx context.Context, tx *txn) error
	// lockKeySet serialises changes to the signing key set until commit.
	lockKeySet(ctx context.Context, tx *txn) error
	// lockReplicas serialises replica registrations until commit.
	lockReplicas(ctx context.Context, tx *txn) error
	// forKeyShare is the suffix that makes a SELECT hold its rows until
	// commit against FOR UPDATE (and deletes), not against plain updates
	// of non-key columns or other readers.
	forKeyShare() string
	// forNoKeyUpdate is the suffix that makes a SELECT lock its rows for an
	// update of non-key columns: compatible with forKeyShare holders.
	forNoKeyUpdate() string
	// clockSQL is an SQL expression for the database's clock in Unix ns,
	// "" where the store's Go clock (Options.Now) is the clock.
	clockSQL() string
	// notify sends each payload on channel when tx commits (no-op where
	// there is no one else to hear).
	notify(ctx context.Context, tx *txn, channel string, payloads []string) error
	// integrityCheck reports damage the database itself cannot rule out.
	integrityCheck(ctx context.Context, db *handle, thorough bool) error
	isUniqueViolation(err error) bool
	// isRetryable: the transaction lost a race (deadlock, serialization
	// failure) and may simply run again.
	isRetryable(err error) bool
	// isDamaged: the error says the database is not (healthy) sandkey data.
	isDamaged(err error) bool
}

// rebindDollar rewrites "?" placeholders as $1, $2... (Postgres), leaving
// question marks inside quoted literals and identifiers alone.
func rebindDollar(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	var quote byte // the quote character we are inside, 0 outside
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote reopens on the next byte
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// handle is a connection pool whose queries are written with "?"
// placeholders; it rebinds them for its dialect.
type handle struct {
	db *sql.DB
	d  dialect
}

// maxConnAttempts bounds how often a read, or the BEGIN of a transaction,
// is sent again after the pool handed it a connection the server had cut
// (Postgres restarted: every idle pooled connection holds the server's
// goodbye). Nothing ran on such a connection, so sending again is safe.
const maxConnAttempts = 3

// again reports whether a statement that failed with err on attempt may
// be sent again.
func (h *handle) again(ctx context.Context, attempt int, err error) bool {
	return err != nil && attempt < maxConnAttempts && ctx.Err() == nil && h.d.isRetryable(err)
}

func (h *handle) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = h.d.rebind(query)
	for attempt := 1; ; attempt++ {
		rows, err := h.db.QueryContext(ctx, query, args...)
		if !h.again(ctx, attempt, err) {
			return rows, err
		}
	}
}

func (h *handle) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query = h.d.rebind(query)
	for attempt := 1; ; attempt++ {
		row := h.db.QueryRowContext(ctx, query, args...)
		if !h.again(ctx, attempt, row.Err()) {
			return row
		}
	}
}

func (h *handle) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return h.db.ExecContext(ctx, h.d.rebind(query), args...)
}

func (h *handle) begin(ctx context.Context, opts *sql.TxOptions) (*txn, error) {
	for attempt := 1; ; attempt++ {
		tx, err := h.db.BeginTx(ctx, opts)
		if err == nil {
			return &txn{tx: tx, d: h.d}, nil
		}
		if !h.again(ctx, attempt, err) {
			return nil, err
		}
	}
}

// txn is a transaction whose queries are written with "?" placeholders.
type txn struct {
	tx *sql.Tx
	d  dialect
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.rebind(query), args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.rebind(query), args...)
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.d.rebind(query), args...)
}

func (t *txn) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, t.d.rebind(query))
}
