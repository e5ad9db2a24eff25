package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// migration is one schema step: the SQL that takes the schema from
// version-1 to version.
type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations, ordered by version, and
// checks that the versions are 1, 2, 3... without gaps or duplicates.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		v, err := migrationVersion(e.Name())
		if err != nil {
			return nil, err
		}
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("migration %s: want version %d (versions must count up from 1 without gaps)",
				m.name, i+1)
		}
	}
	return out, nil
}

// migrationVersion parses the version from a file name like "0001_initial.sql".
func migrationVersion(name string) (int64, error) {
	prefix, _, ok := strings.Cut(name, "_")
	if !ok || !strings.HasSuffix(name, ".sql") {
		return 0, fmt.Errorf("migration file %s: want NNNN_description.sql", name)
	}
	v, err := strconv.ParseInt(prefix, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("migration file %s: version %q is not a positive number", name, prefix)
	}
	return v, nil
}

// embeddedMigrations are the migrations of dialect d compiled into this binary.
func embeddedMigrations(d dialect) []migration {
	ms, err := loadMigrations(d.migrations())
	if err != nil {
		panic(err) // the files are compiled in; TestEmbeddedMigrationsCountUpFromOne pins them
	}
	return ms
}

// latestMigration is the newest schema version this binary knows. Both
// dialects have the same versions (TestDialectsHaveTheSameMigrations).
func latestMigration(d dialect) int64 { return int64(len(embeddedMigrations(d))) }

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)`

// migrate applies, in order, every migration newer than the database's
// schema version, each in its own transaction together with its row in
// schema_migrations, so a crash leaves the schema at a known version.
func (s *Store) migrate(ctx context.Context) error {
	return s.applyMigrations(ctx, embeddedMigrations(s.dialect))
}

func (s *Store) applyMigrations(ctx context.Context, ms []migration) error {
	for _, m := range ms {
		applied := false
		err := s.writeTx(ctx, func(tx *txn) error {
			// Several gateways may start at once: the first to take the
			// lock migrates, the others then find nothing left to do.
			if err := s.dialect.lockMigrations(ctx, tx); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
			// In the transaction, so a new database gets its
			// schema_migrations table together with the first migration.
			if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
				return fmt.Errorf("create schema_migrations: %w", err)
			}
			// Re-read inside the lock: another process may have migrated
			// since we looked.
			current, err := schemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			if current > int64(len(ms)) {
				return fmt.Errorf("%w: schema version %d, this sandkey knows versions up to %d",
					ErrSchemaTooNew, current, len(ms))
			}
			if m.version <= current {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx,
				"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.version, m.name, dbTime(s.now())); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
			applied = true
			return nil
		})
		if err != nil {
			return err
		}
		if applied {
			s.log.Info("applied schema migration", zap.Int64("version", m.version), zap.String("name", m.name))
		}
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion is the highest applied migration, 0 for none.
func schemaVersion(ctx context.Context, q querier) (int64, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v.Int64, nil
}

// SchemaVersion reports the database's schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	return schemaVersion(ctx, s.reader)
}

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// migrationsOf is the directory of a dialect's migrations inside the
// embed.FS: migrations/<dialect>.
func migrationsOf(dialect string) fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations/"+dialect)
	if err != nil {
		panic(err) // the paths are constants compiled into the binary
	}
	return sub
}
