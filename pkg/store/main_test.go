package store

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as the process it kills.
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(runCrashChild(path))
	}
	goleak.VerifyTestMain(m)
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

// openTestStore opens a new store with an active key testKID.
func openTestStore(t testing.TB) *Store {
	t.Helper()
	s := openAt(t, newTestPath(t), Options{})
	insertTestKey(t, s, testKID, KeyActive)
	return s
}

// openAt opens the store at path and closes it when the test ends.
func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return testEpoch }
	}
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
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
	prefix := randomHex(8)
	return func(id string, gen uint64) (Minted, error) {
		return Minted{
			JTI:       prefix + "-" + strconv.FormatUint(n.Add(1), 10),
			KID:       testKID,
			IssuedAt:  issued,
			ExpiresAt: issued.Add(testTokenLifetime),
			RotateAt:  issued.Add(testTokenLifetime / 2),
			Token:     fmt.Sprintf("token-of-%s-gen-%d", id, gen),
		}, nil
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
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

func queryInt(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// umask sets the process umask and returns the previous one.
func umask(mask int) int { return syscall.Umask(mask) }
