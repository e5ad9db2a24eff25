package store

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/store/pgtest"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// postgres is the package's Postgres server, started by the first test
// that needs it and stopped by TestMain.
var postgres pgtest.Shared

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as the process it kills.
	if location := os.Getenv(crashChildEnv); location != "" {
		os.Exit(runCrashChild(location))
	}
	testmain.Run(m, postgres.Stop)
}

// backend is a database the conformance suite runs every store test
// against.
type backend struct {
	name string
	// newLocation returns where a new, empty store lives: an SQLite path
	// or the DSN of a fresh Postgres schema.
	newLocation func(t testing.TB) string
}

var (
	sqliteBackend   = backend{"sqlite", newTestPath}
	postgresBackend = backend{"postgres", func(t testing.TB) string { return postgres.NewSchema(t) }}
	backends        = []backend{sqliteBackend, postgresBackend}
)

// forEachBackend runs test once per backend, as a subtest named after it.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

// testEpoch is the fixed "now" of tests that do not care about time.
var testEpoch = time.Date(2026, 11, 27, 8, 15, 0, 0, time.UTC)

// testTokenLifetime is the lifetime of tokens minted by testMint.
const testTokenLifetime = time.Hour

// testKID is the kid of the key openTestStore inserts and testMint uses.
const testKID = "k1"

// newTestPath returns a database path in a fresh 0700 directory.
func newTestPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "sandkey.db")
}

// openTestStore opens a new store on b with an active key testKID.
func openTestStore(t testing.TB, b backend) *Store {
	t.Helper()
	s := openAt(t, b.newLocation(t), Options{})
	insertTestKey(t, s, testKID, KeyActive)
	return s
}

// openAt opens the store at location and closes it when the test ends.
func openAt(t testing.TB, location string, opts Options) *Store {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return testEpoch }
	}
	s, err := Open(context.Background(), location, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", RedactDSN(location), err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newTestKey(t testing.TB, kid string, state KeyState) SigningKey {
	t.Helper()
	public, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{KID: kid, Seed: private.Seed(), Public: public, State: state}
}

func insertTestKey(t testing.TB, s *Store, kid string, state KeyState) SigningKey {
	t.Helper()
	k := newTestKey(t, kid, state)
	if err := s.InsertKey(context.Background(), k); err != nil {
		t.Fatalf("InsertKey(%s): %v", kid, err)
	}
	return k
}

func createTestSandbox(t testing.TB, s *Store, name string) Sandbox {
	t.Helper()
	sb, err := s.CreateSandbox(context.Background(), NewSandbox{
		Name: name, Driver: "process", Spec: []byte(`{"image":"scratch"}`),
	})
	if err != nil {
		t.Fatalf("CreateSandbox(%s): %v", name, err)
	}
	return sb
}

// testMint mints fake tokens with unique jtis, issued at the given time;
// the token text names the sandbox and generation so tests can check which
// token a row holds.
func testMint(issued time.Time) MintFunc {
	var n atomic.Uint64
	prefix := randid.New(8)
	return func(id string, gen uint64) (Minted, error) {
		return Minted{
			JTI:       prefix + "-" + strconv.FormatUint(n.Add(1), 10),
			KID:       testKID,
			IssuedAt:  issued,
			ExpiresAt: issued.Add(testTokenLifetime),
			RotateAt:  issued.Add(testTokenLifetime / 2),
		}, nil
	}
}

func fileHash(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// rawDB opens the file with the plain driver, bypassing every check of
// Open, to prepare or inspect files the way another program would.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open(sqliteDriver, "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t testing.TB, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// queryInt runs a query written with "?" placeholders through the store's
// handle, which rebinds it for the dialect.
func queryInt(t testing.TB, db *handle, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// tableExists reports whether the store's schema has a table of this name.
func tableExists(t testing.TB, s *Store, name string) bool {
	t.Helper()
	query := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
	if s.Dialect() == "postgres" {
		query = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?"
	}
	return queryInt(t, s.reader, query, name) > 0
}

// pgAdmin connects to the Postgres schema of dsn as the server's
// superuser, to do what sandkey's own role may not (turn off foreign keys).
func pgAdmin(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	db, err := sql.Open("pgx", postgres.Server(t).AdminDSN(pgtest.Database)+" search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// fingerprint identifies a store's contents, to show that a refused Open
// changed nothing: the SQLite file's hash, or the Postgres schema's
// migrations and tables.
func fingerprint(t testing.TB, location string) string {
	t.Helper()
	if !IsPostgresDSN(location) {
		return fileHash(t, location)
	}
	db := pgAdmin(t, location)
	var b strings.Builder
	for _, query := range []string{
		"SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
		`SELECT version || ' ' || name || ' ' || applied_at FROM schema_migrations
		 WHERE to_regclass('schema_migrations') IS NOT NULL ORDER BY version`,
	} {
		if strings.Contains(query, "schema_migrations") && !strings.Contains(b.String(), "schema_migrations\n") {
			continue
		}
		rows, err := db.Query(query)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			b.WriteString(line + "\n")
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// rawExec runs a statement on the store at location the way another
// program would, bypassing Open: the plain SQLite driver, or Postgres'
// superuser in the store's schema. The statement must have no arguments.
func rawExec(t testing.TB, location, stmt string) {
	t.Helper()
	if IsPostgresDSN(location) {
		mustExec(t, pgAdmin(t, location), stmt)
		return
	}
	db := rawDB(t, location)
	mustExec(t, db, stmt)
	db.Close()
}

// deleteWithoutForeignKeys deletes a sandbox row the way a bug or a manual
// edit would, with foreign keys off, leaving its generations dangling.
func deleteWithoutForeignKeys(t testing.TB, s *Store, id string) {
	t.Helper()
	ctx := context.Background()
	if s.Dialect() == "postgres" {
		// Foreign keys are triggers; replica mode skips them (superuser only).
		conn, err := pgAdmin(t, s.location).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		mustExec(t, conn, "SET session_replication_role = replica")
		mustExec(t, conn, "DELETE FROM sandboxes WHERE id = $1", id)
		return
	}
	conn, err := s.writer.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mustExec(t, conn, "PRAGMA foreign_keys = OFF")
	mustExec(t, conn, "DELETE FROM sandboxes WHERE id = ?", id)
	mustExec(t, conn, "PRAGMA foreign_keys = ON")
}

// umask sets the process umask and returns the previous one.
func umask(mask int) int { return syscall.Umask(mask) }
