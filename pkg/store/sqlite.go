package store

// Everything specific to SQLite lives in this file, file.go and
// migrations/sqlite/: connection strings, pragmas, the checks at open and
// error classification.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlitelib "modernc.org/sqlite/lib"
)

// sqliteDriver is the database/sql driver name registered by modernc.org/sqlite.
const sqliteDriver = "sqlite"

// sqliteMagic starts every SQLite 3 database file (file format, section 1.3.1).
const sqliteMagic = "SQLite format 3\x00"

// sqliteHeaderSize is the size of the database header at the start of page 1.
const sqliteHeaderSize = 100

// applicationID is stored in the file header (PRAGMA application_id, set by
// the first migration) so that an SQLite file of another program is refused
// rather than migrated. The value spells "SDKY".
const applicationID = 0x53444b59

// connRole selects the connection settings of one of the store's pools.
type connRole int

const (
	// roleInspect: read-only, used at open before anything may write.
	roleInspect connRole = iota
	// roleWriter: the one connection every write goes through.
	roleWriter
	// roleReader: query-only connections for concurrent reads.
	roleReader
)

// writerCacheKiB caps the writer's page cache. SQLite's default (2 MiB)
// cannot hold the pages a 10,000-sandbox rotation touches, and rereads them
// from the file; the cache only grows as far as the database does.
const writerCacheKiB = 64 << 10

// sqliteDSN builds the modernc.org/sqlite connection string for path.
//
// The path is passed as a file: URI so that mode=rw forbids SQLite from ever
// creating the file (Open creates it with the right permissions itself) and
// mode=ro guarantees the checks at open cannot modify a damaged file.
func sqliteDSN(path string, role connRole, busy time.Duration) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	switch role {
	case roleInspect:
		q.Set("mode", "ro")
	case roleWriter:
		q.Set("mode", "rw")
		// BEGIN IMMEDIATE takes the write lock at the start of a transaction,
		// so two writers (even in two processes) queue on busy_timeout
		// instead of failing on a lock upgrade halfway through.
		q.Set("_txlock", "immediate")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "journal_mode(WAL)")
		// FULL: a commit is on disk before it returns, so a generation is
		// durable before its token leaves the gateway.
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", writerCacheKiB))
	case roleReader:
		q.Set("mode", "rw")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "query_only(1)")
	}
	u := url.URL{Path: path}
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// sqliteDialect is the SQLite file's dialect (see dialect.go).
type sqliteDialect struct{}

func (sqliteDialect) name() string               { return "sqlite" }
func (sqliteDialect) rebind(query string) string { return query }
func (sqliteDialect) migrations() fs.FS          { return migrationsOf("sqlite") }

// forUpdate: BEGIN IMMEDIATE already holds the database's write lock.
func (sqliteDialect) forUpdate() string { return "" }

// readTxOptions: in WAL mode every read transaction is a snapshot.
func (sqliteDialect) readTxOptions() *sql.TxOptions { return &sql.TxOptions{ReadOnly: true} }

// lockMigrations: BEGIN IMMEDIATE serialises writers, processes included.
func (sqliteDialect) lockMigrations(context.Context, *txn) error { return nil }

// lockKeySet: BEGIN IMMEDIATE holds the whole database.
func (sqliteDialect) lockKeySet(context.Context, *txn) error { return nil }

// lockReplicas: BEGIN IMMEDIATE holds the whole database.
func (sqliteDialect) lockReplicas(context.Context, *txn) error { return nil }

// forKeyShare and forNoKeyUpdate: BEGIN IMMEDIATE already holds the
// database's write lock.
func (sqliteDialect) forKeyShare() string    { return "" }
func (sqliteDialect) forNoKeyUpdate() string { return "" }

// clockSQL: one gateway, one clock: the store's Options.Now.
func (sqliteDialect) clockSQL() string { return "" }

// notify: an SQLite store has one gateway, which hears nothing from others.
func (sqliteDialect) notify(context.Context, *txn, string, []string) error { return nil }

func (sqliteDialect) integrityCheck(ctx context.Context, db *handle, thorough bool) error {
	return integrityCheck(ctx, db.db, thorough)
}

// isRetryable: SQLite waits on busy_timeout instead of failing a race.
func (sqliteDialect) isRetryable(error) bool { return false }

func (sqliteDialect) isUniqueViolation(err error) bool { return isUniqueViolation(err) }
func (sqliteDialect) isDamaged(err error) bool         { return isDamaged(err) }

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlitelib.SQLITE_CONSTRAINT_UNIQUE ||
		e.Code() == sqlitelib.SQLITE_CONSTRAINT_PRIMARYKEY
}

// isDamaged reports whether err says the file is not a (healthy) database.
func isDamaged(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	primary := e.Code() & 0xff
	return primary == sqlitelib.SQLITE_CORRUPT || primary == sqlitelib.SQLITE_NOTADB
}

// fileInfo is what the checks at open learn about an existing database.
type fileInfo struct {
	appID         int64
	tables        int   // user tables, schema_migrations included
	schemaVersion int64 // 0 when schema_migrations does not exist
}

// inspectDatabase reads the file's identity and schema version without
// writing anything.
func inspectDatabase(ctx context.Context, db *sql.DB) (fileInfo, error) {
	var info fileInfo
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&info.appID); err != nil {
		return info, fmt.Errorf("read application_id: %w", err)
	}
	if err := db.QueryRowContext(ctx,
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'",
	).Scan(&info.tables); err != nil {
		return info, fmt.Errorf("list tables: %w", err)
	}
	var hasMigrations int
	if err := db.QueryRowContext(ctx,
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
	).Scan(&hasMigrations); err != nil {
		return info, fmt.Errorf("look for schema_migrations: %w", err)
	}
	if hasMigrations == 0 {
		return info, nil
	}
	v, err := schemaVersion(ctx, db)
	info.schemaVersion = v
	return info, err
}

// integrityCheck runs PRAGMA quick_check (fast, O(N)) or integrity_check
// (thorough: also checks that indexes match their tables) and
// foreign_key_check, and returns every problem they report.
func integrityCheck(ctx context.Context, db *sql.DB, thorough bool) error {
	pragma := "PRAGMA quick_check"
	if thorough {
		pragma = "PRAGMA integrity_check"
	}
	problems, err := queryStrings(ctx, db, pragma)
	if err != nil {
		return fmt.Errorf("%s: %w", pragma, err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		problems = nil
	}
	rows, err := db.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("PRAGMA foreign_key_check: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fk int64
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			return fmt.Errorf("PRAGMA foreign_key_check: %w", err)
		}
		problems = append(problems, fmt.Sprintf("row %d of %s references a missing %s row",
			rowid.Int64, table, parent))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("PRAGMA foreign_key_check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errIntegrity, strings.Join(problems, "; "))
	}
	return nil
}

// errIntegrity marks a failed integrity check; Open and Check wrap it with
// ErrNotDatabase and the path.
var errIntegrity = errors.New("integrity check failed")

func queryStrings(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
