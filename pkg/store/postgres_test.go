package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sandkey/sandkey/pkg/store/pgtest"
)

func TestRebindDollarNumbersPlaceholdersOutsideQuotes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = ? AND c IN (?, ?)", "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"},
		{"SELECT '?', \"odd?name\" FROM t WHERE a = ?", "SELECT '?', \"odd?name\" FROM t WHERE a = $1"},
		{"SELECT 'it''s?' WHERE a = ?", "SELECT 'it''s?' WHERE a = $1"},
	}
	for _, tt := range tests {
		if got := rebindDollar(tt.in); got != tt.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactDSNHidesThePassword(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://gw:s3cret@db:5432/sandkey?sslmode=verify-full", "postgres://gw:xxxxx@db:5432/sandkey?sslmode=verify-full"},
		{"postgresql://gw@db/sandkey?password=s3cret", "postgresql://gw@db/sandkey?password=xxxxx"},
		{"postgres://gw@db/sandkey", "postgres://gw@db/sandkey"},
		{"postgres://gw:s3cret@db:port%zz/x", "postgres://(unparsable DSN)"},
	}
	for _, tt := range tests {
		if got := RedactDSN(tt.in); got != tt.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOpenPicksTheDialectFromTheLocation(t *testing.T) {
	for location, want := range map[string]bool{
		"postgres://h/db": true, "postgresql://h/db": true,
		"/var/lib/sandkey/sandkey.db": false, "sandkey.db": false, "postgres.db": false,
	} {
		if got := IsPostgresDSN(location); got != want {
			t.Errorf("IsPostgresDSN(%q) = %v, want %v", location, got, want)
		}
	}
	forEachBackend(t, func(t *testing.T, be backend) {
		if s := openAt(t, be.newLocation(t), Options{}); s.Dialect() != be.name {
			t.Errorf("Dialect() = %q, want %q", s.Dialect(), be.name)
		}
	})
}

func TestPostgresOpenFailsClearlyAndNeverShowsThePassword(t *testing.T) {
	srv := postgres.Server(t)
	closed := freeLoopbackPort(t)
	const wrongPassword = "not-the-password-7f3a"
	dsn := func(password, host, database string, params url.Values) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(pgtest.Role, password),
			Host: host, Path: "/" + database, RawQuery: params.Encode()}
		return u.String()
	}
	here := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port()))
	plain := url.Values{"sslmode": {"disable"}}
	tests := []struct {
		name     string
		dsn      string
		want     error
		wantHint string
	}{
		{"malformed", "postgres://" + pgtest.Role + ":" + srv.Password() + "@127.0.0.1:notaport/" + pgtest.Database,
			ErrInvalidDSN, "postgres://USER:PASSWORD@HOST:PORT/DATABASE"},
		{"unreachable", dsn(srv.Password(), net.JoinHostPort("127.0.0.1", strconv.Itoa(closed)), pgtest.Database, plain),
			ErrConnect, "cannot reach the server"},
		{"wrong password", dsn(wrongPassword, here, pgtest.Database, plain), ErrConnect, "wrong password"},
		{"wrong password, TLS preferred", dsn(wrongPassword, here, pgtest.Database, nil), ErrConnect, "wrong password"},
		{"no such database", dsn(srv.Password(), here, "nosuchdb", plain), ErrConnect, "no such database"},
		{"no such schema", dsn(srv.Password(), here, pgtest.Database,
			url.Values{"sslmode": {"disable"}, "search_path": {"nosuchschema"}}), ErrNotDatabase, "search_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(context.Background(), tt.dsn, Options{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
			t.Logf("Open: %v", err)
			if !strings.Contains(err.Error(), tt.wantHint) {
				t.Errorf("error %q lacks the hint %q", err, tt.wantHint)
			}
			for _, secret := range []string{srv.Password(), wrongPassword} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a password", err)
				}
			}
		})
	}
}

func TestPostgresOpenRefusesAnotherProgramsSchemaWithoutTouchingIt(t *testing.T) {
	dsn := postgres.NewSchema(t)
	admin := pgAdmin(t, dsn)
	mustExec(t, admin, "CREATE TABLE customers (name TEXT)")
	mustExec(t, admin, "INSERT INTO customers VALUES ('alice')")
	before := fingerprint(t, dsn)

	_, err := Open(context.Background(), dsn, Options{})
	if !errors.Is(err, ErrNotDatabase) || !strings.Contains(err.Error(), "another program") {
		t.Fatalf("Open = %v, want ErrNotDatabase naming another program", err)
	}
	if fingerprint(t, dsn) != before {
		t.Error("foreign schema was modified by Open")
	}
}

func TestReplicasOpeningANewDatabaseTogetherMigrateItOnce(t *testing.T) {
	dsn := postgres.NewSchema(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(context.Background(), dsn, Options{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	s := stores[0]
	if n := queryInt(t, s.reader, "SELECT count(*) FROM schema_migrations"); n != latestMigration(s.dialect) {
		t.Errorf("schema_migrations has %d rows, want %d: a migration ran twice or not at all", n, latestMigration(s.dialect))
	}
}

// storesOnOneDatabase opens n stores on one new database of b, as n
// gateways sharing it would; the first gets the active key testKID.
func storesOnOneDatabase(t *testing.T, b backend, n int) []*Store {
	t.Helper()
	location := b.newLocation(t)
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = openAt(t, location, Options{})
	}
	insertTestKey(t, stores[0], testKID, KeyActive)
	return stores
}

func TestSeveralGatewaysRotatingTheSameSandboxesNeverIssueAGenerationTwice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		const gateways, sandboxes, rounds = 4, 6, 12
		stores := storesOnOneDatabase(t, be, gateways)
		var ids []string
		for i := range sandboxes {
			ids = append(ids, createTestSandbox(t, stores[0], fmt.Sprintf("sb-%d", i)).ID)
		}
		var mu sync.Mutex
		issued := map[string]map[uint64]string{} // sandbox -> gen -> jti
		errs := make(chan error, gateways)
		for g, s := range stores {
			go func() {
				mint := testMint(testEpoch)
				// Each gateway rotates every sandbox, in its own order, and
				// records what it wrote, as the sweep does.
				order := append([]string(nil), ids...)
				for i := range order {
					j := (i*(g+2) + g) % len(order)
					order[i], order[j] = order[j], order[i]
				}
				for range rounds {
					gens, err := s.NextGenerations(ctx, order, mint)
					if err != nil {
						errs <- fmt.Errorf("gateway %d: %w", g, err)
						return
					}
					written := map[string]uint64{}
					mu.Lock()
					for _, gen := range gens {
						if issued[gen.SandboxID] == nil {
							issued[gen.SandboxID] = map[uint64]string{}
						}
						if prev, ok := issued[gen.SandboxID][gen.Gen]; ok {
							mu.Unlock()
							errs <- fmt.Errorf("generation %d of %s issued twice: jti %s and %s", gen.Gen, gen.SandboxID, prev, gen.JTI)
							return
						}
						issued[gen.SandboxID][gen.Gen] = gen.JTI
						written[gen.SandboxID] = gen.Gen
					}
					mu.Unlock()
					if _, err := s.RecordWrittenBatch(ctx, written); err != nil {
						errs <- fmt.Errorf("gateway %d: %w", g, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range gateways {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			if got := len(issued[id]); got != gateways*rounds {
				t.Errorf("sandbox %s: %d generations issued, want %d", id, got, gateways*rounds)
			}
			sb, err := stores[1].GetSandbox(ctx, id)
			if err != nil || sb.LatestGen != gateways*rounds {
				t.Errorf("sandbox %s: latest %d (%v), want %d", id, sb.LatestGen, err, gateways*rounds)
			}
			latest, err := stores[2].LatestGeneration(ctx, id)
			if err != nil || latest.JTI != issued[id][gateways*rounds] {
				t.Errorf("sandbox %s: newest generation %+v (%v), want jti %s", id, latest, err, issued[id][gateways*rounds])
			}
		}
	})
}

func TestKeyRotatedThroughOneGatewayIsInAnothersKeySetAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		stores := storesOnOneDatabase(t, be, 2)
		rotating, other := stores[0], stores[1]
		next := insertTestKey(t, rotating, "k2", KeyVerify)
		if err := rotating.ActivateKey(ctx, "k2"); err != nil {
			t.Fatal(err)
		}
		active, err := other.ActiveKey(ctx)
		if err != nil || active.KID != "k2" || string(active.Seed) != string(next.Seed) {
			t.Fatalf("the other store's active key: %s (%v), want k2", active.KID, err)
		}
		keys, err := other.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]KeyState{}
		for _, k := range keys {
			states[k.KID] = k.State
		}
		if states[testKID] != KeyVerify || states["k2"] != KeyActive {
			t.Errorf("the other store's key set: %v, want %s verify and k2 active", states, testKID)
		}
	})
}

func TestGatewaysActivatingKeysAtOnceLeaveExactlyOneActive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		const gateways, rounds = 4, 5
		stores := storesOnOneDatabase(t, be, gateways)
		errs := make(chan error, gateways)
		for g, s := range stores {
			go func() {
				for r := range rounds {
					kid := fmt.Sprintf("g%d-r%d", g, r)
					if err := s.InsertKey(ctx, newTestKey(t, kid, KeyVerify)); err != nil {
						errs <- err
						return
					}
					if err := s.ActivateKey(ctx, kid); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range gateways {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		keys, err := stores[0].ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var active []string
		for _, k := range keys {
			if k.State == KeyActive {
				active = append(active, k.KID)
			}
		}
		if len(active) != 1 || len(keys) != 1+gateways*rounds {
			t.Errorf("%d keys, active %v; want %d keys, exactly one active", len(keys), active, 1+gateways*rounds)
		}
	})
}

// freeLoopbackPort returns a loopback port nothing listens on.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestGatewaysPublishingNextKeysAtOnceLeaveOneNext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		const gateways = 4
		stores := storesOnOneDatabase(t, be, gateways)
		at := testEpoch.Add(time.Hour)
		results := make(chan error, gateways)
		for g, s := range stores {
			go func() {
				k := newTestKey(t, fmt.Sprintf("next-%d", g), KeyNext)
				k.ActivateAt = at
				results <- s.InsertKey(ctx, k)
			}()
		}
		published := 0
		for range gateways {
			switch err := <-results; {
			case err == nil:
				published++
			case !errors.Is(err, ErrKeyState):
				t.Fatalf("InsertKey(next): %v, want success or ErrKeyState", err)
			}
		}
		due, err := stores[0].KeysDueForActivation(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if published != 1 || len(due) != 1 {
			t.Errorf("%d next keys published, %d waiting; want exactly one", published, len(due))
		}
	})
}

func TestMarkRunningDueMakesEveryRunningSandboxDueWhileOthersRotate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		stores := storesOnOneDatabase(t, be, 2)
		s := stores[0]
		var running []string
		for i := range 6 {
			sb := createTestSandbox(t, s, fmt.Sprintf("sb-%d", i))
			state := SandboxRunning
			if i%3 == 0 {
				state = SandboxStopped
			} else {
				running = append(running, sb.ID)
			}
			if err := s.UpdateSandboxState(ctx, sb.ID, state, "i"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.NextGenerations(ctx, running, testMint(testEpoch)); err != nil {
			t.Fatal(err)
		}
		if due, err := s.DueForRotation(ctx, testEpoch); err != nil || len(due) != 0 {
			t.Fatalf("freshly rotated: due %v, %v", due, err)
		}
		if n, err := s.CountExpired(ctx, testEpoch.Add(testTokenLifetime)); err != nil || n != len(running) {
			t.Errorf("CountExpired at expiry = %d, %v; want %d", n, err, len(running))
		}
		// Another gateway rotates (in reverse order) while this one marks.
		reversed := make([]string, len(running))
		for i, id := range running {
			reversed[len(running)-1-i] = id
		}
		done := make(chan error, 1)
		go func() {
			for range 10 {
				if _, err := stores[1].NextGenerations(ctx, reversed, testMint(testEpoch)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		n, err := s.MarkRunningDue(ctx)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err != nil || n != int64(len(running)) {
			t.Fatalf("MarkRunningDue = %d, %v; want %d", n, err, len(running))
		}
	})
}

func TestWriteTxRunsAgainOnlyAfterLosingARace(t *testing.T) {
	// Stand-ins (fakes) for the errors Postgres returns when a transaction
	// loses a deadlock or a serialization race, and one it does not retry;
	// TestWriteTxRunsAgainAfterARealDeadlock has Postgres raise the first.
	deadlock := &pgconn.PgError{Code: pgDeadlockDetected, Message: "deadlock detected"}
	serialization := &pgconn.PgError{Code: pgSerializationFailure, Message: "could not serialize access"}
	unique := &pgconn.PgError{Code: pgUniqueViolation, Message: "duplicate key"}
	tests := []struct {
		backend  backend
		failWith error
		wantRuns int
	}{
		{postgresBackend, serialization, 2},
		{postgresBackend, unique, 1},
		{sqliteBackend, deadlock, 1}, // SQLite never loses a race: it waits
	}
	for _, tt := range tests {
		t.Run(tt.backend.name+"/"+pgCode(tt.failWith), func(t *testing.T) {
			s := openTestStore(t, tt.backend)
			runs := 0
			err := s.writeTx(context.Background(), func(tx *txn) error {
				runs++
				if _, err := tx.ExecContext(context.Background(), "UPDATE sandboxes SET rotate_at = 0"); err != nil {
					return err
				}
				if runs == 1 {
					return fmt.Errorf("first run: %w", tt.failWith)
				}
				return nil
			})
			if runs != tt.wantRuns {
				t.Errorf("fn ran %d times, want %d", runs, tt.wantRuns)
			}
			if (err == nil) != (tt.wantRuns == 2) {
				t.Errorf("writeTx = %v after %d runs", err, runs)
			}
		})
	}
}

func TestWriteTxRunsAgainAfterARealDeadlock(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, postgresBackend)
	a, b := createTestSandbox(t, s, "a"), createTestSandbox(t, s, "b")
	lock := func(tx *txn, id string) error {
		_, err := tx.ExecContext(ctx, "SELECT id FROM sandboxes WHERE id = ? FOR UPDATE", id)
		return err
	}
	// Another gateway's transaction holds b.
	other, err := s.writer.begin(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.tx.Rollback() //nolint:errcheck // committed below unless the test failed
	if err := lock(other, b.ID); err != nil {
		t.Fatal(err)
	}
	runs := 0
	waiting := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.writeTx(ctx, func(tx *txn) error {
			runs++
			if err := lock(tx, a.ID); err != nil {
				return err
			}
			if runs == 1 {
				close(waiting)
			}
			return lock(tx, b.ID) // waits for the other transaction
		})
	}()
	<-waiting
	// The writeTx side has waited longest when the cycle closes, so its
	// deadlock check (after deadlock_timeout, 1 s) finds it and aborts it.
	time.Sleep(300 * time.Millisecond)
	if err := lock(other, a.ID); err != nil {
		t.Fatalf("the other transaction lost the deadlock instead: %v", err)
	}
	if err := other.tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("writeTx after a deadlock: %v", err)
	}
	if runs != 2 {
		t.Errorf("the transaction ran %d times, want 2 (aborted by the deadlock, then run again)", runs)
	}
}

func TestStoreCarriesOnAfterPostgresRestarts(t *testing.T) {
	// A server of its own: the restart cuts every connection.
	srv, dsn := pgtest.Own(t)
	ctx := context.Background()
	s := openAt(t, dsn, Options{})
	insertTestKey(t, s, testKID, KeyActive)
	sb := createTestSandbox(t, s, "a")
	mint := testMint(testEpoch)
	if _, err := s.NextGenerations(ctx, []string{sb.ID}, mint); err != nil {
		t.Fatal(err)
	}
	// Every pooled connection was just used: none is idle long enough for
	// the driver to ping it before its next use.
	warm(t, s, sb.ID)
	restarted := time.Now()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Postgres restarted in %v", time.Since(restarted))
	// Reads on a connection the restart cut are sent again on a new one.
	if _, err := s.GetSandbox(ctx, sb.ID); err != nil {
		t.Fatalf("first read after the restart: %v", err)
	}
	if _, err := s.LatestGeneration(ctx, sb.ID); err != nil {
		t.Fatalf("first read transaction after the restart: %v", err)
	}
	if _, err := s.ListSandboxes(ctx); err != nil {
		t.Fatalf("first list after the restart: %v", err)
	}
	// The pool's connections were cut: the transaction that finds one dead
	// runs again on a new one, and nothing is minted twice.
	gens, err := s.NextGenerations(ctx, []string{sb.ID}, mint)
	if err != nil {
		t.Fatalf("first rotation after the restart: %v", err)
	}
	if gens[0].Gen != 2 {
		t.Errorf("generation %d after the restart, want 2", gens[0].Gen)
	}
	if v, err := s.IsAcceptable(ctx, sb.ID, 2, gens[0].JTI); err != nil || v != VerdictAccepted {
		t.Errorf("IsAcceptable(2) = %s, %v; want accepted", v, err)
	}
}

// warm uses every connection of s's pool at once, so that each was used a
// moment ago.
func warm(t *testing.T, s *Store, id string) {
	t.Helper()
	var wg sync.WaitGroup
	for range postgresConns {
		wg.Go(func() {
			if err := s.readTx(context.Background(), func(tx *txn) error {
				var n int
				time.Sleep(20 * time.Millisecond) // hold the connection: the others need their own
				return tx.QueryRowContext(context.Background(), "SELECT count(*) FROM sandboxes WHERE id = ?", id).Scan(&n)
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestReadsSurviveConnectionsTheServerCut(t *testing.T) {
	location := postgresBackend.newLocation(t)
	s := openAt(t, location, Options{})
	insertTestKey(t, s, testKID, KeyActive)
	sb := createTestSandbox(t, s, "cut")
	if _, err := s.NextGenerations(context.Background(), []string{sb.ID}, testMint(testEpoch)); err != nil {
		t.Fatal(err)
	}
	admin := pgAdmin(t, location)
	ctx := context.Background()
	for round := range 5 {
		warm(t, s, sb.ID)
		var cut int
		if err := admin.QueryRowContext(ctx,
			"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
			pgtest.Role).Scan(&cut); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetSandbox(ctx, sb.ID); err != nil {
			t.Fatalf("round %d: a read after %d connections were cut: %v", round, cut, err)
		}
		if _, err := s.LatestGeneration(ctx, sb.ID); err != nil {
			t.Fatalf("round %d: a read transaction after the cut: %v", round, err)
		}
	}
}

func TestPostgresConnectionsDropTransactionsLeftIdle(t *testing.T) {
	location := postgresBackend.newLocation(t)
	s := openAt(t, location, Options{})
	var got string
	if err := s.reader.QueryRowContext(context.Background(), "SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "10s" {
		t.Errorf("idle_in_transaction_session_timeout = %q, want 10s: a paused leader's open transaction would hold the lease row", got)
	}
	// A DSN that sets it keeps its own value.
	own := openAt(t, location+"&idle_in_transaction_session_timeout=2500", Options{})
	if err := own.reader.QueryRowContext(context.Background(), "SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "2500ms" {
		t.Errorf("with the DSN's own value: %q, want 2500ms", got)
	}
}
