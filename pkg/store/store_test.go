package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/sandkey/sandkey/pkg/randid"
)

func TestOpenCreatesPrivateFileAtLatestSchema(t *testing.T) {
	path := newTestPath(t)
	s := openAt(t, path, Options{})

	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", p, got)
		}
	}
	v, err := s.SchemaVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := latestMigration(s.dialect); v != want || want < 1 {
		t.Errorf("schema version %d, want %d (>= 1)", v, want)
	}
	var mode string
	if err := s.reader.QueryRowContext(context.Background(), "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q (%v), want wal", mode, err)
	}
	var sync, fk int
	if err := s.writer.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("writer synchronous = %d (%v), want 2 (FULL)", sync, err)
	}
	if err := s.writer.QueryRowContext(context.Background(), "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("writer foreign_keys = %d (%v), want 1", fk, err)
	}
}

func TestOpenCreatesPrivateFileDespitePermissiveUmask(t *testing.T) {
	// The mode must not depend on the process umask; 0 is the worst case.
	// (umask is process-wide, hence no t.Parallel anywhere in this package.)
	path := newTestPath(t)
	old := umask(0)
	defer umask(old)
	openAt(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode %04o with umask 0, want 0600", got)
	}
}

func TestReopenKeepsDataAndAppliesNoMigrationTwice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		sb, err := s.CreateSandbox(ctx, NewSandbox{Name: "a", Driver: "process"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = openAt(t, path, Options{ThoroughCheck: true})
		openAt(t, path, Options{}) // a second open of an open store is fine too
		if got, err := s.GetSandbox(ctx, sb.ID); err != nil || got.Name != "a" {
			t.Fatalf("GetSandbox after reopen = %+v, %v", got, err)
		}
		rows := queryInt(t, s.reader, "SELECT count(*) FROM schema_migrations")
		if rows != latestMigration(s.dialect) {
			t.Errorf("schema_migrations has %d rows, want one per migration (%d)", rows, latestMigration(s.dialect))
		}
	})
}

func TestMigrationsApplyOnlyNewerVersionsInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openAt(t, be.newLocation(t), Options{})
		base := embeddedMigrations(s.dialect)
		extra := func(v int64, sql string) migration {
			return migration{version: v, name: "test", sql: sql}
		}
		v1 := append(append([]migration{}, base...),
			extra(int64(len(base)+1), "CREATE TABLE extra (n BIGINT NOT NULL)"))
		if err := s.applyMigrations(ctx, v1); err != nil {
			t.Fatal(err)
		}
		// Re-running the same list must not re-create the table (it would fail).
		v2 := append(append([]migration{}, v1...),
			extra(int64(len(v1)+1), "INSERT INTO extra (n) VALUES (7)"))
		if err := s.applyMigrations(ctx, v2); err != nil {
			t.Fatal(err)
		}
		if err := s.applyMigrations(ctx, v2); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, s.reader, "SELECT count(*) FROM extra"); n != 1 {
			t.Errorf("extra has %d rows, want 1: a migration ran twice", n)
		}
		if v, _ := s.SchemaVersion(ctx); v != int64(len(v2)) {
			t.Errorf("schema version %d, want %d", v, len(v2))
		}
	})
}

func TestFailedMigrationLeavesSchemaAtPreviousVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openAt(t, be.newLocation(t), Options{})
		base := embeddedMigrations(s.dialect)
		broken := append(append([]migration{}, base...), migration{
			version: int64(len(base) + 1), name: "broken",
			sql: "CREATE TABLE half (n BIGINT); INSERT INTO nowhere VALUES (1)",
		})
		if err := s.applyMigrations(ctx, broken); err == nil {
			t.Fatal("broken migration applied without error")
		}
		if v, _ := s.SchemaVersion(ctx); v != int64(len(base)) {
			t.Errorf("schema version %d after failed migration, want %d", v, len(base))
		}
		if tableExists(t, s, "half") {
			t.Error("failed migration left its first statement applied")
		}
	})
}

func TestEmbeddedMigrationsCountUpFromOne(t *testing.T) {
	for _, d := range []dialect{sqliteDialect{}, postgresDialect{}} {
		ms, err := loadMigrations(d.migrations())
		if err != nil {
			t.Fatalf("%s: %v", d.name(), err)
		}
		for i, m := range ms {
			if m.version != int64(i+1) || strings.TrimSpace(m.sql) == "" {
				t.Errorf("%s migration %d: version %d, %d bytes", d.name(), i, m.version, len(m.sql))
			}
		}
	}
}

func TestDialectsHaveTheSameMigrations(t *testing.T) {
	// One schema version means the same thing on both databases: the
	// Postgres migrations mirror the SQLite ones, file for file.
	lite, pg := embeddedMigrations(sqliteDialect{}), embeddedMigrations(postgresDialect{})
	if len(lite) != len(pg) {
		t.Fatalf("%d SQLite migrations, %d Postgres migrations", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].name != pg[i].name {
			t.Errorf("migration %d: %s on SQLite, %s on Postgres", i+1, lite[i].name, pg[i].name)
		}
	}
}

func TestLoadMigrationsRejectsBadSets(t *testing.T) {
	for name, files := range map[string]fstest.MapFS{
		"gap":       {"0001_a.sql": {Data: []byte("x")}, "0003_c.sql": {Data: []byte("x")}},
		"duplicate": {"0001_a.sql": {Data: []byte("x")}, "001_b.sql": {Data: []byte("x")}},
		"bad name":  {"initial.sql": {Data: []byte("x")}},
		"zero":      {"0000_a.sql": {Data: []byte("x")}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadMigrations(files); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestOpenRefusesNewerSchemaWithoutTouchingIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s.writer, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
		location := s.Location()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		before := fingerprint(t, path)

		_, err = Open(ctx, path, Options{})
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
		}
		for _, want := range []string{location, "999"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if fingerprint(t, path) != before {
			t.Error("refused database was modified")
		}
	})
}

func TestOpenInAMissingDirectoryIsAnUnusableLocationSayingWhatToDo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	_, err := Open(context.Background(), filepath.Join(dir, "sandkey.db"), Options{})
	if !errors.Is(err, ErrLocation) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "mkdir") {
		t.Fatalf("Open = %v, want ErrLocation naming %s and how to create it", err, dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused Open created %s (stat: %v)", dir, err)
	}
}

func TestOpenRefusesInsecurePermissions(t *testing.T) {
	tests := []struct {
		name     string
		fileMode os.FileMode // 0: no file
		dirMode  os.FileMode
		wantHint string
	}{
		{"world-readable file", 0o644, 0o700, "chmod 600"},
		{"group-readable file", 0o640, 0o700, "chmod 600"},
		{"other-writable file", 0o602, 0o700, "chmod 600"},
		{"group-writable directory", 0, 0o770, "chmod go-w"},
		{"other-writable directory", 0, 0o703, "chmod go-w"},
		{"group-writable directory with a file", 0o600, 0o720, "chmod go-w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "sandkey.db")
			if tt.fileMode != 0 {
				s, err := Open(context.Background(), path, Options{})
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				if err := os.Chmod(path, tt.fileMode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			_, err := Open(context.Background(), path, Options{})
			if !errors.Is(err, ErrInsecurePermissions) {
				t.Fatalf("Open = %v, want ErrInsecurePermissions", err)
			}
			if !strings.Contains(err.Error(), tt.wantHint) {
				t.Errorf("error %q lacks the fix %q", err, tt.wantHint)
			}
			if tt.fileMode == 0 {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("refused Open created the file (stat: %v)", err)
				}
				return
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.fileMode {
				t.Errorf("refused Open changed the mode to %04o", fi.Mode().Perm())
			}
		})
	}
}

func TestOpenTightensLooseSidecarFiles(t *testing.T) {
	path := newTestPath(t)
	for _, suffix := range sidecarSuffixes {
		// An empty -wal and -shm are valid leftovers of a clean shutdown.
		if err := os.WriteFile(path+suffix, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path+suffix, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	openAt(t, path, Options{})
	for _, suffix := range sidecarSuffixes {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", suffix, fi.Mode().Perm())
		}
	}
}

func TestOpenRefusesDamagedFileWithoutTouchingIt(t *testing.T) {
	// realDB writes a healthy store with some rows, closed cleanly (the WAL
	// checkpointed into the file), and returns its bytes.
	realDB := func(t *testing.T) []byte {
		path := newTestPath(t)
		s, err := Open(context.Background(), path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		insertTestKey(t, s, testKID, KeyActive)
		var ids []string
		for i := 0; i < 40; i++ {
			// A 2 KiB spec each: the file spans a few dozen pages.
			sb, err := s.CreateSandbox(context.Background(), NewSandbox{
				Name: "sb-" + randid.New(8), Driver: "process",
				Spec: []byte(`{"env":"` + randid.New(1024) + `"}`),
			})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, sb.ID)
		}
		if _, err := s.NextGenerations(context.Background(), ids, testMint(testEpoch)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	garbage := make([]byte, 8192)
	copy(garbage, randid.New(4096))

	tests := []struct {
		name     string
		contents func(t *testing.T) []byte
		wantMsg  string
	}{
		{"garbage", func(*testing.T) []byte { return garbage }, "does not start with the SQLite header"},
		{"short file", func(*testing.T) []byte { return []byte("hello") }, "too short"},
		{"sqlite header then garbage", func(*testing.T) []byte {
			return append([]byte(sqliteMagic), garbage...)
		}, "damaged"},
		{"truncated real database", func(t *testing.T) []byte {
			b := realDB(t)
			return b[:len(b)/2]
		}, "damaged"},
		{"real database with a zeroed data page", func(t *testing.T) []byte {
			// Far from the schema pages: only the integrity check reads it.
			b := realDB(t)
			pageSize := int(b[16])<<8 | int(b[17])
			pages := len(b) / pageSize
			if pages < 8 {
				t.Fatalf("test database too small: %d pages", pages)
			}
			victim := pages - 3
			clear(b[victim*pageSize : (victim+1)*pageSize])
			return b
		}, "damaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := newTestPath(t)
			if err := os.WriteFile(path, tt.contents(t), 0o600); err != nil {
				t.Fatal(err)
			}
			before := fileHash(t, path)
			_, err := Open(context.Background(), path, Options{})
			if !errors.Is(err, ErrNotDatabase) {
				t.Fatalf("Open = %v, want ErrNotDatabase", err)
			}
			t.Logf("Open: %v", err)
			for _, want := range []string{path, tt.wantMsg} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if fileHash(t, path) != before {
				t.Error("damaged file was modified by Open")
			}
		})
	}
}

func TestOpenRefusesAnotherProgramsDatabase(t *testing.T) {
	path := newTestPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	mustExec(t, db, "CREATE TABLE customers (name TEXT)")
	mustExec(t, db, "INSERT INTO customers VALUES ('alice')")
	db.Close()
	before := fileHash(t, path)

	_, err := Open(context.Background(), path, Options{})
	if !errors.Is(err, ErrNotDatabase) || !strings.Contains(err.Error(), "another program") {
		t.Fatalf("Open = %v, want ErrNotDatabase naming another program", err)
	}
	if fileHash(t, path) != before {
		t.Error("foreign database was modified by Open")
	}
}

func TestOpenAcceptsEmptyFile(t *testing.T) {
	// A crash between creating the file and the first migration leaves it empty.
	path := newTestPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path, Options{})
	if v, err := s.SchemaVersion(context.Background()); err != nil || v != latestMigration(s.dialect) {
		t.Errorf("schema version %d, %v", v, err)
	}
}

func TestCheckPassesOnHealthyStoreAndFailsOnDamage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		sb := createTestSandbox(t, s, "a")
		if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("Check on a healthy store: %v", err)
		}

		// A dangling reference (written with foreign keys off, as a bug or a
		// manual edit would) is damage Check must report.
		deleteWithoutForeignKeys(t, s, sb.ID)
		err := s.Check(ctx)
		if !errors.Is(err, ErrNotDatabase) || !strings.Contains(err.Error(), "generations") {
			t.Fatalf("Check = %v, want ErrNotDatabase naming generations", err)
		}
	})
}

func TestTwoStoresOnOneFileShareTheWriteLock(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		// Two gateways (or a gateway and an operator tool) on one file: BEGIN
		// IMMEDIATE and busy_timeout must serialise them, not fail or interleave.
		ctx := context.Background()
		path := be.newLocation(t)
		a := openAt(t, path, Options{})
		b := openAt(t, path, Options{})
		insertTestKey(t, a, testKID, KeyActive)
		sb := createTestSandbox(t, a, "shared")

		const rounds = 30
		errs := make(chan error, 2)
		for _, s := range []*Store{a, b} {
			go func() {
				mint := testMint(testEpoch)
				for i := 0; i < rounds; i++ {
					if _, err := s.NextGenerations(ctx, []string{sb.ID}, mint); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		latest, err := a.LatestGeneration(ctx, sb.ID)
		if err != nil || latest.Gen != 2*rounds {
			t.Fatalf("latest generation %d (%v), want %d", latest.Gen, err, 2*rounds)
		}
	})
}

// A store of schema 1 holding a sandbox and its generations (a backup
// taken before the generation floor existed) opens at the latest schema with a
// floor of zero, and counts on from its own counter.
func TestSchema1StoreWithGenerationsMigratesToTheFloor(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s := openAt(t, path, Options{})
		insertTestKey(t, s, testKID, KeyActive)
		sb := createTestSandbox(t, s, "old")
		for range 2 {
			if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		// Take the store back to schema 1, as a sandkey before the floor left it.
		rawExec(t, path, "DROP TABLE key_activations")
		rawExec(t, path, "ALTER TABLE sandboxes DROP COLUMN run_id")
		rawExec(t, path, "ALTER TABLE sandboxes DROP COLUMN gen_floor")
		rawExec(t, path, "ALTER TABLE generations ADD COLUMN token TEXT")
		rawExec(t, path, "CREATE INDEX generations_with_token ON generations (sandbox_id, gen) WHERE token IS NOT NULL")
		undoReplicasMigration(t, path)
		rawExec(t, path, "DELETE FROM schema_migrations WHERE version > 1")

		s = openAt(t, path, Options{})
		if v, _ := s.SchemaVersion(ctx); v != latestMigration(s.dialect) {
			t.Fatalf("schema version %d, want %d", v, latestMigration(s.dialect))
		}
		got, err := s.GetSandbox(ctx, sb.ID)
		if err != nil || got.LatestGen != 2 || got.GenFloor != 0 {
			t.Fatalf("migrated sandbox: %+v, %v; want gen 2, floor 0", got, err)
		}
		gens, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch))
		if err != nil || gens[0].Gen != 3 {
			t.Fatalf("first generation after the migration: %+v, %v; want 3", gens, err)
		}
	})
}
