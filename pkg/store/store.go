package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// DefaultBusyTimeout is how long a statement waits for a lock held by
// another connection or process before failing with SQLITE_BUSY.
const DefaultBusyTimeout = 5 * time.Second

// defaultReaders is the size of the read pool: reads (token checks at every
// Hello) must not queue behind a rotation sweep holding the writer.
const defaultReaders = 4

// Options configure Open. The zero value is usable.
type Options struct {
	// KeyFile, when set, encrypts signing key seeds at rest with the
	// AES-256-GCM key in this file (32 raw bytes or 64 hex digits, mode
	// 0600). Keys already stored in the clear stay readable.
	KeyFile string
	// BusyTimeout bounds SQLite's lock waits; DefaultBusyTimeout when
	// zero. (A Postgres writer waits for a row lock as long as its holder's
	// transaction lasts: one sweep's batch.)
	BusyTimeout time.Duration
	// ThoroughCheck runs PRAGMA integrity_check at open instead of the
	// faster quick_check (which skips checking indexes against tables).
	// SQLite only: Postgres checks its own pages.
	ThoroughCheck bool
	// Now is the clock for created_at, updated_at and retired_at;
	// time.Now when nil.
	Now func() time.Time
	// Logger; zap.NewNop() when nil.
	Logger *zap.Logger
}

// Store is the gateway's durable state. It is safe for concurrent use.
type Store struct {
	location string // the file's absolute path, or the DSN without its password
	dialect  dialect
	writer   *handle // SQLite: exactly one connection, all writes serialised
	reader   *handle // SQLite: query-only connections; Postgres: the writer's pool
	sealer   *sealer // nil: keys stored in the clear
	now      func() time.Time
	log      *zap.Logger
	// pgConfig (Postgres only) opens Listen's dedicated connection.
	pgConfig *pgx.ConnConfig
	// listenName is the application_name of Listen's connection.
	listenName string
}

// Open opens the store at location, checks it and brings its schema up to
// date. A location starting with postgres:// or postgresql:// is a Postgres
// DSN; anything else is the path of an SQLite file, created (mode 0600)
// when it does not exist. See the package documentation for every check
// and refusal.
func Open(ctx context.Context, location string, opts Options) (*Store, error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = DefaultBusyTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	open := openSQLite
	if IsPostgresDSN(location) {
		open = openPostgres
	}
	s, err := open(ctx, location, opts)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", s.location, err)
	}
	if err := s.checkKeysDecrypt(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", s.location, err)
	}
	return s, nil
}

// openSQLite opens the SQLite file at path, up to its migrations.
func openSQLite(ctx context.Context, path string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	log := opts.Logger.With(zap.String("store", abs))

	var seal *sealer
	if opts.KeyFile != "" {
		if seal, err = loadKeyFile(opts.KeyFile); err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	created, err := prepareFile(abs)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if created {
		log.Info("created store")
	}
	if err := checkHeader(abs); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := inspect(ctx, abs, opts, log); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	s := &Store{location: abs, dialect: sqliteDialect{}, sealer: seal, now: opts.Now, log: log}
	if err := s.openPools(ctx, opts.BusyTimeout); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := tightenSidecars(abs, log); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// inspect checks an existing file through a read-only connection before the
// read-write pools open it: nothing here can modify a damaged, foreign or
// too-new database (setting WAL mode, for one, writes the header).
func inspect(ctx context.Context, path string, opts Options, log *zap.Logger) error {
	db, err := sql.Open(sqliteDriver, sqliteDSN(path, roleInspect, opts.BusyTimeout))
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	defer db.Close()

	damaged := func(err error) error {
		if isDamaged(err) || errors.Is(err, errIntegrity) {
			return fmt.Errorf("%w: %s is damaged (%v); it was left untouched: restore a backup, or move it away to start with an empty store",
				ErrNotDatabase, path, err)
		}
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	info, err := inspectDatabase(ctx, db)
	if err != nil {
		return damaged(err)
	}
	if err := integrityCheck(ctx, db, opts.ThoroughCheck); err != nil {
		return damaged(err)
	}
	foreign := info.appID != applicationID && (info.appID != 0 || info.tables > 0)
	if foreign {
		return fmt.Errorf("%w: %s is an SQLite database of another program (application_id %#x, %d tables); it was left untouched: check the path",
			ErrNotDatabase, path, info.appID, info.tables)
	}
	if known := latestMigration(sqliteDialect{}); info.schemaVersion > known {
		return fmt.Errorf("%w: %s has schema version %d, this sandkey knows versions up to %d; run a newer sandkey or restore a backup taken before the upgrade",
			ErrSchemaTooNew, path, info.schemaVersion, known)
	}
	return tightenSidecars(path, log)
}

func (s *Store) openPools(ctx context.Context, busy time.Duration) error {
	writer, err := sql.Open(sqliteDriver, sqliteDSN(s.location, roleWriter, busy))
	if err != nil {
		return err
	}
	s.writer = &handle{db: writer, d: s.dialect}
	// One connection, never closed while the store is open: every write
	// is serialised in-process, and BEGIN IMMEDIATE serialises processes.
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	// Connect now: the first connection switches the file to WAL mode, which
	// the readers' query_only connections cannot do.
	if err := writer.PingContext(ctx); err != nil {
		return fmt.Errorf("connect writer: %w", err)
	}
	reader, err := sql.Open(sqliteDriver, sqliteDSN(s.location, roleReader, busy))
	if err != nil {
		return err
	}
	s.reader = &handle{db: reader, d: s.dialect}
	reader.SetMaxOpenConns(defaultReaders)
	reader.SetMaxIdleConns(defaultReaders)
	if err := reader.PingContext(ctx); err != nil {
		return fmt.Errorf("connect reader: %w", err)
	}
	return nil
}

// Location is where the store lives: the absolute path of the SQLite file,
// or the Postgres DSN with its password hidden.
func (s *Store) Location() string { return s.location }

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect.name() }

// Check runs a full integrity check, for instance after a crash or from an
// operator command: PRAGMA integrity_check and foreign_key_check on SQLite,
// a search for rows whose references dangle on Postgres. It reads only.
func (s *Store) Check(ctx context.Context) error {
	if err := s.dialect.integrityCheck(ctx, s.reader, true); err != nil {
		if s.dialect.isDamaged(err) || errors.Is(err, errIntegrity) {
			return fmt.Errorf("check store %s: %w: %v", s.location, ErrNotDatabase, err)
		}
		return fmt.Errorf("check store %s: %w", s.location, err)
	}
	return nil
}

// Close closes the store. The SQLite writer closes last, so SQLite
// checkpoints the WAL into the database file and removes it.
func (s *Store) Close() error {
	var errs []error
	if s.reader != nil && s.reader != s.writer {
		errs = append(errs, s.reader.db.Close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.db.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store %s: %w", s.location, err)
	}
	return nil
}

// maxTxAttempts bounds how often writeTx runs a transaction that lost a
// race or its connection (Postgres) before giving up.
const maxTxAttempts = 5

// writeTx runs fn in a write transaction and commits when fn returns nil.
// On SQLite that is BEGIN IMMEDIATE on the single writer connection; on
// Postgres a READ COMMITTED transaction whose rows fn locks itself. A
// transaction that lost a race (deadlock, serialization failure) or its
// connection before COMMIT was sent (a pooled connection the server cut
// when it restarted) is rolled back by the server and run again, so fn must
// start from scratch each time (reset what it collects). A failed COMMIT is
// never run again: it may have committed.
func (s *Store) writeTx(ctx context.Context, fn func(tx *txn) error) error {
	for attempt := 1; ; attempt++ {
		committing, err := s.writeTxOnce(ctx, fn)
		if err == nil || committing || attempt == maxTxAttempts || ctx.Err() != nil || !s.dialect.isRetryable(err) {
			return err
		}
		s.log.Debug("write transaction lost a race or its connection; running it again",
			zap.Int("attempt", attempt), zap.Error(err))
		// A short random pause keeps the contenders from meeting again.
		time.Sleep(time.Duration(rand.IntN(attempt*5)+1) * time.Millisecond)
	}
}

// writeTxOnce runs fn in one transaction; committing reports that err came
// from COMMIT itself.
func (s *Store) writeTxOnce(ctx context.Context, fn func(tx *txn) error) (committing bool, err error) {
	tx, err := s.writer.begin(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin write: %w", err)
	}
	err = checkFence(ctx, tx, s)
	if err == nil {
		err = fn(tx)
	}
	if err != nil {
		if rbErr := tx.tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return false, errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
		return false, err
	}
	if err := tx.tx.Commit(); err != nil {
		return true, fmt.Errorf("commit: %w", err)
	}
	return false, nil
}

// readTx runs fn in a read-only transaction: one consistent snapshot.
func (s *Store) readTx(ctx context.Context, fn func(tx *txn) error) error {
	tx, err := s.reader.begin(ctx, s.dialect.readTxOptions())
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.tx.Rollback() //nolint:errcheck // read-only: nothing to undo
	return fn(tx)
}

// Times are stored as Unix nanoseconds; 0 is the zero time.

func dbTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func goTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
