package store

// Everything specific to Postgres lives in this file and in
// migrations/postgres/: the DSN, the checks at open, row locks, migration
// locking and error classification.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/randid"
)

// postgresSchemes are the URL schemes that make a store location a
// Postgres DSN rather than an SQLite path.
var postgresSchemes = []string{"postgres://", "postgresql://"}

// IsPostgresDSN reports whether a store location names a Postgres database
// (postgres://... or postgresql://...) rather than an SQLite file.
func IsPostgresDSN(location string) bool {
	for _, scheme := range postgresSchemes {
		if strings.HasPrefix(location, scheme) {
			return true
		}
	}
	return false
}

// postgresConns is the size of the connection pool. Reads and writes share
// it; writes to different sandboxes run in parallel, and row locks order
// the writes to one sandbox.
const postgresConns = 8

// postgresConnectTimeout bounds each connection attempt when the DSN sets
// no connect_timeout, so a gateway pointed at an unreachable host fails at
// start instead of hanging.
const postgresConnectTimeout = 10 * time.Second

// postgresIdleInTxTimeout is the server-side idle_in_transaction_session_timeout
// of the store's connections unless the DSN sets one: a gateway paused or
// cut off in the middle of a transaction (a leader's fenced sweep holding
// the lease row) loses it, rolled back, instead of holding its locks, and
// the next leader's takeover, until its TCP connection times out. The
// store's transactions never sit idle for more than a moment.
const postgresIdleInTxTimeout = 10 * time.Second

const idleInTxParam = "idle_in_transaction_session_timeout"

// postgresSQLState codes the store acts on (PostgreSQL manual, appendix A).
const (
	pgUniqueViolation      = "23505"
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
	pgDataCorrupted        = "XX001"
	pgIndexCorrupted       = "XX002"
	pgInvalidPassword      = "28P01"
	pgInvalidAuthorization = "28000"
	pgUnknownDatabase      = "3D000"
	pgInsufficientPrivs    = "42501"
	pgAdminShutdown        = "57P01"
	pgCrashShutdown        = "57P02"
	pgCannotConnectNow     = "57P03"
	// pgConnectionExceptionClass starts every connection exception (08xxx).
	pgConnectionExceptionClass = "08"
)

// Advisory lock keys (database-wide), derived from the application id.
const (
	advisoryMigrations int64 = applicationID
	advisoryKeySet     int64 = applicationID + 1
	advisoryReplicas   int64 = applicationID + 2
)

// postgresDialect is a Postgres database's dialect (see dialect.go).
type postgresDialect struct{}

func (postgresDialect) name() string               { return "postgres" }
func (postgresDialect) rebind(query string) string { return rebindDollar(query) }
func (postgresDialect) migrations() fs.FS          { return migrationsOf("postgres") }

// forUpdate: writers run in parallel at READ COMMITTED; a row they read to
// decide a write stays locked until they commit.
func (postgresDialect) forUpdate() string { return " FOR UPDATE" }

// readTxOptions: READ COMMITTED gives each statement its own snapshot; a
// read of several statements needs one for the whole transaction.
func (postgresDialect) readTxOptions() *sql.TxOptions {
	return &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
}

// lockMigrations takes a transaction-scoped advisory lock, keyed by the
// application id: replicas starting together migrate one after the other.
func (postgresDialect) lockMigrations(ctx context.Context, tx *txn) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", advisoryMigrations)
	return err
}

// lockKeySet takes a transaction-scoped advisory lock: unlike row locks, it
// also serialises the first keys inserted into an empty key set.
func (postgresDialect) lockKeySet(ctx context.Context, tx *txn) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", advisoryKeySet)
	return err
}

// lockReplicas takes a transaction-scoped advisory lock, so two gateways
// registering at once see each other.
func (postgresDialect) lockReplicas(ctx context.Context, tx *txn) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", advisoryReplicas)
	return err
}

// forKeyShare: the weakest row lock; only SELECT ... FOR UPDATE (and a
// delete) waits for it.
func (postgresDialect) forKeyShare() string { return " FOR KEY SHARE" }

// forNoKeyUpdate: the lock an UPDATE of non-key columns takes, which
// forKeyShare holders do not block.
func (postgresDialect) forNoKeyUpdate() string { return " FOR NO KEY UPDATE" }

// clockSQL is the server's clock, read afresh at each evaluation: replicas
// on several hosts compare lease and liveness times against one clock.
func (postgresDialect) clockSQL() string {
	return "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"
}

// notify queues one notification per payload, delivered to listeners at
// commit (and dropped at rollback), in one statement.
func (postgresDialect) notify(ctx context.Context, tx *txn, channel string, payloads []string) error {
	if len(payloads) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_notify(?, p) FROM unnest(?::text[]) AS p", channel, payloads)
	if err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// integrityCheck looks for rows whose references dangle. Postgres enforces
// the foreign keys itself; this finds what a manual edit with triggers off
// (or a partial restore) left behind.
func (postgresDialect) integrityCheck(ctx context.Context, db *handle, _ bool) error {
	checks := []struct{ query, format string }{
		{`SELECT g.sandbox_id, g.gen FROM generations g
		  WHERE NOT EXISTS (SELECT 1 FROM sandboxes s WHERE s.id = g.sandbox_id)
		  ORDER BY g.sandbox_id, g.gen LIMIT 10`,
			"row (sandbox %[1]s, generation %[2]s) of generations references a missing sandboxes row"},
		{`SELECT g.kid, g.sandbox_id FROM generations g
		  WHERE NOT EXISTS (SELECT 1 FROM signing_keys k WHERE k.kid = g.kid)
		  ORDER BY g.kid LIMIT 10`,
			"a row of sandbox %[2]s in generations references a missing signing_keys row %[1]s"},
	}
	var problems []string
	for _, c := range checks {
		rows, err := db.QueryContext(ctx, c.query)
		if err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				rows.Close()
				return fmt.Errorf("integrity check: %w", err)
			}
			problems = append(problems, fmt.Sprintf(c.format, a, b))
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errIntegrity, strings.Join(problems, "; "))
	}
	return nil
}

func (postgresDialect) isUniqueViolation(err error) bool { return pgCode(err) == pgUniqueViolation }

// isRetryable: a lost race, or a lost connection (the server's transaction
// ended with it): a cut connection (class 08), a server shutting down or
// starting (57P01-57P03), or an error pgconn guarantees happened before
// anything was sent.
func (postgresDialect) isRetryable(err error) bool {
	switch code := pgCode(err); {
	case code == pgSerializationFailure, code == pgDeadlockDetected,
		code == pgAdminShutdown, code == pgCrashShutdown, code == pgCannotConnectNow,
		strings.HasPrefix(code, pgConnectionExceptionClass):
		return true
	}
	return pgconn.SafeToRetry(err)
}

func (postgresDialect) isDamaged(err error) bool {
	code := pgCode(err)
	return code == pgDataCorrupted || code == pgIndexCorrupted
}

// pgCode is the SQLSTATE of a Postgres error, "" for any other error.
func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// RedactDSN returns a Postgres DSN fit for logs and errors: the password,
// in the user part or as a parameter, is replaced by "xxxxx". A DSN that
// does not parse becomes its scheme alone.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		for _, scheme := range postgresSchemes {
			if strings.HasPrefix(dsn, scheme) {
				return scheme + "(unparsable DSN)"
			}
		}
		return "(unparsable DSN)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// openPostgres connects to the database dsn names and checks it, up to its
// migrations. The DSN's password never appears in an error or a log.
func openPostgres(ctx context.Context, dsn string, opts Options) (*Store, error) {
	loc := RedactDSN(dsn)
	log := opts.Logger.With(zap.String("store", loc))
	var seal *sealer
	if opts.KeyFile != "" {
		var err error
		if seal, err = loadKeyFile(opts.KeyFile); err != nil {
			return nil, fmt.Errorf("open store %s: %w", loc, err)
		}
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its own message.
		return nil, fmt.Errorf("open store %s: %w: %v; write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full",
			loc, ErrInvalidDSN, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = postgresConnectTimeout
	}
	if _, set := cfg.RuntimeParams[idleInTxParam]; !set {
		cfg.RuntimeParams[idleInTxParam] = strconv.FormatInt(postgresIdleInTxTimeout.Milliseconds(), 10)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(postgresConns)
	db.SetMaxIdleConns(postgresConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", loc, connectError(cfg, err))
	}
	h := &handle{db: db, d: postgresDialect{}}
	if err := inspectPostgres(ctx, h, loc); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{location: loc, dialect: postgresDialect{}, writer: h, reader: h,
		sealer: seal, now: opts.Now, log: log, pgConfig: cfg.Copy(),
		listenName: "sandkey-listen-" + randid.New(6)}, nil
}

// connectError says why the first connection failed, and what to do.
func connectError(cfg *pgx.ConnConfig, err error) error {
	who := fmt.Sprintf("user %s on database %s at %s:%d", cfg.User, cfg.Database, cfg.Host, cfg.Port)
	var hint string
	switch pgCode(err) {
	case pgInvalidPassword:
		hint = "wrong password: check the DSN's password (or PGPASSWORD, ~/.pgpass)"
	case pgInvalidAuthorization:
		hint = "the server refused this user: check the user name and the server's pg_hba.conf"
	case pgUnknownDatabase:
		hint = "no such database: create it (CREATE DATABASE ... OWNER ...) or fix the DSN"
	case pgInsufficientPrivs:
		hint = "the user may not connect to this database: GRANT CONNECT, or fix the DSN"
	case "":
		hint = "cannot reach the server: check that it runs and that host and port are right"
	default:
		hint = "the server refused the connection"
	}
	return fmt.Errorf("%w: %s: %s (%v)", ErrConnect, who, hint, err)
}

// postgresInfo is what the checks at open learn about a database schema.
type postgresInfo struct {
	schema        string // current_schema(): where the tables are, or would be created
	tables        int    // tables in that schema
	marked        bool   // sandkey_store holds sandkey's application id
	schemaVersion int64  // 0 when schema_migrations does not exist
}

// inspectPostgres refuses, before any migration writes, a schema that holds
// another program's tables or a newer sandkey's.
func inspectPostgres(ctx context.Context, db *handle, loc string) error {
	var info postgresInfo
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("inspect %s: read current schema: %w", loc, err)
	}
	if !schema.Valid {
		return fmt.Errorf("%w: %s: no schema of the search_path exists; create one, or fix the DSN's search_path", ErrNotDatabase, loc)
	}
	info.schema = schema.String
	has := func(table string) (bool, error) {
		var n int
		err := db.QueryRowContext(ctx,
			"SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?",
			table).Scan(&n)
		return n > 0, err
	}
	if err := db.QueryRowContext(ctx,
		"SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()").Scan(&info.tables); err != nil {
		return fmt.Errorf("inspect %s: list tables: %w", loc, err)
	}
	marker, err := has("sandkey_store")
	if err != nil {
		return fmt.Errorf("inspect %s: look for sandkey_store: %w", loc, err)
	}
	if marker {
		var id int64
		err := db.QueryRowContext(ctx, "SELECT application_id FROM sandkey_store").Scan(&id)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("inspect %s: read sandkey_store: %w", loc, err)
		}
		info.marked = id == applicationID
	}
	if info.tables > 0 && !info.marked {
		return fmt.Errorf("%w: %s: schema %s holds %d tables of another program; it was left untouched: give sandkey a database or schema of its own",
			ErrNotDatabase, loc, info.schema, info.tables)
	}
	migrations, err := has("schema_migrations")
	if err != nil {
		return fmt.Errorf("inspect %s: look for schema_migrations: %w", loc, err)
	}
	if migrations {
		if info.schemaVersion, err = schemaVersion(ctx, db); err != nil {
			return fmt.Errorf("inspect %s: %w", loc, err)
		}
	}
	if known := latestMigration(postgresDialect{}); info.schemaVersion > known {
		return fmt.Errorf("%w: %s has schema version %d, this sandkey knows versions up to %d; run a newer sandkey or restore a backup taken before the upgrade",
			ErrSchemaTooNew, loc, info.schemaVersion, known)
	}
	return nil
}
