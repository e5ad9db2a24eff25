package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/store/pgtest"
)

// leaseClock drives lease expiry on both backends: SQLite's store clock is
// Options.Now, which the test moves; Postgres uses the server's clock, so
// the test waits for real.
type leaseClock struct {
	postgres bool
	now      atomic.Int64
}

func newLeaseClock(b backend) *leaseClock {
	c := &leaseClock{postgres: b.name == "postgres"}
	c.now.Store(testEpoch.UnixNano())
	return c
}

func (c *leaseClock) Now() time.Time { return time.Unix(0, c.now.Load()).UTC() }

func (c *leaseClock) advance(d time.Duration) {
	if c.postgres {
		time.Sleep(d)
		return
	}
	c.now.Add(int64(d))
}

// openLeaseStore opens a store on a new location of b whose clock c drives.
func openLeaseStore(t *testing.T, b backend, c *leaseClock) (*Store, string) {
	t.Helper()
	location := b.newLocation(t)
	s := openAt(t, location, Options{Now: c.Now})
	insertTestKey(t, s, testKID, KeyActive)
	return s, location
}

func TestLeaseIsTakenRenewedAndTakenOverAfterExpiryWithANewEpoch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clock := newLeaseClock(b)
		s, _ := openLeaseStore(t, b, clock)
		ctx := context.Background()
		const ttl = 400 * time.Millisecond

		l, ok, err := s.AcquireLease(ctx, "leader", "a", ttl)
		if err != nil || !ok || l.Holder != "a" || l.Epoch != 1 {
			t.Fatalf("first AcquireLease = %+v, %v, %v; want a at epoch 1", l, ok, err)
		}
		first := l.Expires
		if l2, ok, err := s.AcquireLease(ctx, "leader", "b", ttl); err != nil || ok || l2.Holder != "a" {
			t.Fatalf("AcquireLease by b while a holds it = %+v, %v, %v; want refused, naming a", l2, ok, err)
		} else if l2.Left <= 0 || l2.Left > ttl {
			t.Fatalf("refused AcquireLease says the lease has %v left; want within (0, %v]", l2.Left, ttl)
		}
		clock.advance(ttl / 4)
		l, ok, err = s.AcquireLease(ctx, "leader", "a", ttl)
		if err != nil || !ok || l.Epoch != 1 || !l.Expires.After(first) {
			t.Fatalf("renewal = %+v, %v, %v; want epoch 1 with a later expiry than %v", l, ok, err, first)
		}
		clock.advance(ttl + ttl/4)
		l, ok, err = s.AcquireLease(ctx, "leader", "b", ttl)
		if err != nil || !ok || l.Holder != "b" || l.Epoch != 2 {
			t.Fatalf("AcquireLease by b after expiry = %+v, %v, %v; want b at epoch 2", l, ok, err)
		}
		if err := s.ReleaseLease(ctx, "leader", "a"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.AcquireLease(ctx, "leader", "a", ttl); ok {
			t.Fatal("a released a lease it did not hold, and took it back from b")
		}
		if err := s.ReleaseLease(ctx, "leader", "b"); err != nil {
			t.Fatal(err)
		}
		l, ok, err = s.AcquireLease(ctx, "leader", "a", ttl)
		if err != nil || !ok || l.Epoch != 3 {
			t.Fatalf("AcquireLease after b released = %+v, %v, %v; want a at epoch 3 at once", l, ok, err)
		}
	})
}

func TestFencedWriteOfADeposedHolderCommitsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clock := newLeaseClock(b)
		s, _ := openLeaseStore(t, b, clock)
		ctx := context.Background()
		sb := createTestSandbox(t, s, "a")
		const ttl = 300 * time.Millisecond

		la, _, err := s.AcquireLease(ctx, "leader", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		fenced := WithFence(ctx, "leader", "a", la.Epoch)
		if _, err := s.NextGenerations(fenced, []string{sb.ID}, testMint(testEpoch)); err != nil {
			t.Fatalf("a fenced write of the holder: %v", err)
		}
		// a stalls past its lease; b takes over.
		clock.advance(ttl + ttl/2)
		if _, err := s.NextGenerations(fenced, []string{sb.ID}, testMint(testEpoch)); !errors.Is(err, ErrFenced) {
			t.Fatalf("a fenced write after a's lease expired: %v, want ErrFenced", err)
		}
		if _, ok, err := s.AcquireLease(ctx, "leader", "b", ttl); err != nil || !ok {
			t.Fatalf("b takes over: %v, %v", ok, err)
		}
		_, err = s.NextGenerations(fenced, []string{sb.ID}, testMint(testEpoch))
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("the deposed holder's fenced write: %v, want ErrFenced", err)
		}
		if !strings.Contains(err.Error(), `held by "b" at epoch 2`) {
			t.Errorf("error %q does not say who holds the lease", err)
		}
		if _, err := s.PruneGenerations(fenced, testEpoch.Add(48*time.Hour)); !errors.Is(err, ErrFenced) {
			t.Errorf("the deposed holder's fenced prune: %v, want ErrFenced", err)
		}
		g, err := s.LatestGeneration(ctx, sb.ID)
		if err != nil || g.Gen != 1 {
			t.Fatalf("latest generation %d (%v), want 1: the deposed holder's write committed", g.Gen, err)
		}
		// Reads are not fenced.
		if _, err := s.LatestGeneration(fenced, sb.ID); err != nil {
			t.Errorf("a read under a lost fence: %v", err)
		}
	})
}

func TestTwoHoldersRacingForALeaseNeverBothHoldIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clock := newLeaseClock(b)
		s1, location := openLeaseStore(t, b, clock)
		s2 := openAt(t, location, Options{Now: clock.Now})
		ctx := context.Background()
		const rounds = 20
		var lastEpoch uint64
		for round := range rounds {
			var wg sync.WaitGroup
			var won [2]bool
			var epochs [2]uint64
			var errs [2]error
			start := make(chan struct{})
			for i, s := range []*Store{s1, s2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					l, ok, err := s.AcquireLease(ctx, "leader", fmt.Sprintf("h%d", i), time.Minute)
					won[i], epochs[i], errs[i] = ok, l.Epoch, err
				}()
			}
			close(start)
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("round %d: %v, %v", round, errs[0], errs[1])
			}
			if won[0] == won[1] {
				t.Fatalf("round %d: holders won %v: exactly one must hold the lease", round, won)
			}
			winner := 0
			if won[1] {
				winner = 1
			}
			if epochs[winner] != lastEpoch+1 {
				t.Fatalf("round %d: epoch %d, want %d", round, epochs[winner], lastEpoch+1)
			}
			lastEpoch = epochs[winner]
			if err := s1.ReleaseLease(ctx, "leader", fmt.Sprintf("h%d", winner)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

var testSettings = ClusterSettings{Issuer: "https://sandkey.test", Audience: "sandbox", TrustDomain: "sandkey.test", TokenLifetime: time.Hour}

func TestReplicaRegistryRefusesMixedModesAndOtherSettings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clock := newLeaseClock(b)
		s, _ := openLeaseStore(t, b, clock)
		ctx := context.Background()
		const ttl = 400 * time.Millisecond
		single := Replica{ID: "solo", Mode: ModeSingle, Settings: testSettings}
		if err := s.RegisterReplica(ctx, single, ttl); err != nil {
			t.Fatal(err)
		}
		// The same gateway registering again (a restart) is fine.
		if err := s.RegisterReplica(ctx, single, ttl); err != nil {
			t.Fatalf("re-registering the same id: %v", err)
		}
		err := s.RegisterReplica(ctx, Replica{ID: "other", Mode: ModeSingle, Settings: testSettings}, ttl)
		if !errors.Is(err, ErrReplicaConflict) || !strings.Contains(err.Error(), "solo") {
			t.Fatalf("a second single gateway: %v, want ErrReplicaConflict naming solo", err)
		}
		// solo crashed and its successor starts on the same host and state
		// directory before solo's registration lapsed.
		single.Origin = "host-1:/var/lib/sandkey"
		if err := s.RegisterReplica(ctx, single, ttl); err != nil {
			t.Fatal(err)
		}
		successor := Replica{ID: "solo-2", Mode: ModeSingle, Settings: testSettings, Origin: single.Origin}
		if err := s.RegisterReplica(ctx, successor, ttl); err != nil {
			t.Fatalf("the successor on solo's origin: %v, want it to replace solo", err)
		}
		if live, err := s.LiveReplicas(ctx); err != nil || len(live) != 1 || live[0].ID != "solo-2" || live[0].Origin != single.Origin {
			t.Fatalf("LiveReplicas after the successor registered = %+v, %v; want solo-2 alone", live, err)
		}
		single = successor
		err = s.RegisterReplica(ctx, Replica{ID: "r1", AdminAddr: "10.0.0.1:7443", Mode: ModeReplica, Settings: testSettings}, ttl)
		if !errors.Is(err, ErrReplicaConflict) || !strings.Contains(err.Error(), "--replica-advertise") {
			t.Fatalf("a replica beside a single gateway: %v, want ErrReplicaConflict", err)
		}
		clock.advance(ttl + ttl/2)
		if live, err := s.LiveReplicas(ctx); err != nil || len(live) != 0 {
			t.Fatalf("LiveReplicas after the single gateway lapsed = %v, %v; want none", live, err)
		}
		r1 := Replica{ID: "r1", AdminAddr: "10.0.0.1:7443", Mode: ModeReplica, Settings: testSettings}
		if err := s.RegisterReplica(ctx, r1, time.Minute); err != nil {
			t.Fatalf("a replica once the single gateway lapsed: %v", err)
		}
		other := testSettings
		other.TokenLifetime = 2 * time.Hour
		err = s.RegisterReplica(ctx, Replica{ID: "r2", AdminAddr: "10.0.0.2:7443", Mode: ModeReplica, Settings: other}, time.Minute)
		if !errors.Is(err, ErrReplicaConflict) || !strings.Contains(err.Error(), "--token-lifetime") {
			t.Fatalf("a replica with another token lifetime: %v, want ErrReplicaConflict naming --token-lifetime", err)
		}
		if err := s.RegisterReplica(ctx, Replica{ID: "r2", AdminAddr: "10.0.0.2:7443", Mode: ModeReplica, Settings: testSettings}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.RegisterReplica(ctx, single, time.Minute); !errors.Is(err, ErrReplicaConflict) {
			t.Fatalf("a single gateway beside replicas: %v, want ErrReplicaConflict", err)
		}
		live, err := s.LiveReplicas(ctx)
		if err != nil || len(live) != 2 || live[0].ID != "r1" || live[0].AdminAddr != "10.0.0.1:7443" || live[0].Settings != testSettings {
			t.Fatalf("LiveReplicas = %+v, %v; want r1 and r2 with their addresses and settings", live, err)
		}
		if err := s.HeartbeatReplica(ctx, "r1", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveReplica(ctx, "r2"); err != nil {
			t.Fatal(err)
		}
		if err := s.HeartbeatReplica(ctx, "r2", time.Minute); !errors.Is(err, ErrNotFound) {
			t.Fatalf("heartbeat of a removed replica: %v, want ErrNotFound", err)
		}
	})
}

func TestSessionHolderIsTheLiveReplicaLastRecorded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clock := newLeaseClock(b)
		s, _ := openLeaseStore(t, b, clock)
		ctx := context.Background()
		const ttl = 400 * time.Millisecond
		for _, id := range []string{"r1", "r2"} {
			if err := s.RegisterReplica(ctx, Replica{ID: id, AdminAddr: id + ":7443", Mode: ModeReplica, Settings: testSettings}, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		// More sandboxes than one statement's batch.
		ids := make([]string, rowBatch+3)
		for i := range ids {
			ids[i] = createTestSandbox(t, s, fmt.Sprintf("sb%d", i)).ID
		}
		if err := s.SetSessionHolders(ctx, "r1", append(ids, "no-such-sandbox")); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{ids[0], ids[len(ids)-1]} {
			if r, ok, err := s.SessionHolder(ctx, id); err != nil || !ok || r.ID != "r1" || r.AdminAddr != "r1:7443" {
				t.Fatalf("SessionHolder(%s) = %+v, %v, %v; want r1", id, r, ok, err)
			}
		}
		// The session of ids[0] moved to r2 before r1 saw it end.
		if err := s.SetSessionHolders(ctx, "r2", ids[:1]); err != nil {
			t.Fatal(err)
		}
		if err := s.ClearSessionHolders(ctx, "r1", ids[:2]); err != nil {
			t.Fatal(err)
		}
		if r, ok, err := s.SessionHolder(ctx, ids[0]); err != nil || !ok || r.ID != "r2" {
			t.Fatalf("SessionHolder of a session that moved = %+v, %v, %v; want r2 (r1 cleared only its own rows)", r, ok, err)
		}
		if _, ok, err := s.SessionHolder(ctx, ids[1]); err != nil || ok {
			t.Fatalf("SessionHolder of a cleared session = %v, %v; want none", ok, err)
		}
		all, err := s.SessionHolders(ctx)
		if err != nil || len(all) != len(ids)-1 || all[ids[0]].ID != "r2" || all[ids[2]].ID != "r1" {
			t.Fatalf("SessionHolders = %d holders (%v), want %d with %s on r2 and %s on r1", len(all), err, len(ids)-1, ids[0], ids[2])
		}
		if err := s.HeartbeatReplica(ctx, "r1", ttl); err != nil {
			t.Fatal(err)
		}
		clock.advance(ttl + ttl/2)
		if _, ok, err := s.SessionHolder(ctx, ids[2]); err != nil || ok {
			t.Fatalf("SessionHolder held by a lapsed replica = %v, %v; want none", ok, err)
		}
	})
}

// eventRecorder is an Events that hands what it hears to the test.
type eventRecorder struct {
	gens    chan string
	keys    chan struct{}
	resyncs chan struct{}
}

func newEventRecorder() *eventRecorder {
	return &eventRecorder{gens: make(chan string, 100), keys: make(chan struct{}, 100), resyncs: make(chan struct{}, 100)}
}

func (r *eventRecorder) Generation(id string, gen uint64) { r.gens <- fmt.Sprintf("%s %d", id, gen) }
func (r *eventRecorder) KeysChanged()                     { r.keys <- struct{}{} }
func (r *eventRecorder) Resync()                          { r.resyncs <- struct{}{} }

// within waits for one value on ch for a bounded time.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s within 20s", what)
		panic("unreachable")
	}
}

// listen runs s.Listen(ev) until the test ends.
func listen(t *testing.T, s *Store, ev Events) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, ev) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})
}

func TestListenHearsAnotherStoresGenerationsAndKeyChanges(t *testing.T) {
	location := postgresBackend.newLocation(t)
	writer := openAt(t, location, Options{})
	insertTestKey(t, writer, testKID, KeyActive)
	sb := createTestSandbox(t, writer, "a")
	listener := openAt(t, location, Options{})
	rec := newEventRecorder()
	listen(t, listener, rec)
	within(t, rec.resyncs, "Resync after connecting")

	ctx := context.Background()
	if _, err := writer.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
		t.Fatal(err)
	}
	if got, want := within(t, rec.gens, "generation notification"), sb.ID+" 1"; got != want {
		t.Errorf("heard %q, want %q", got, want)
	}
	insertTestKey(t, writer, "k2", KeyVerify)
	within(t, rec.keys, "key notification after InsertKey")
	if err := writer.ActivateKey(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	within(t, rec.keys, "key notification after ActivateKey")
	if err := writer.RetireKey(ctx, testKID); err != nil {
		t.Fatal(err)
	}
	within(t, rec.keys, "key notification after RetireKey")

	// A rolled-back transaction notifies nothing.
	_, err := writer.NextGenerations(ctx, []string{sb.ID}, func(string, uint64) (Minted, error) {
		return Minted{}, errors.New("mint fails")
	})
	if err == nil {
		t.Fatal("NextGenerations with a failing mint succeeded")
	}
	if _, err := writer.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
		t.Fatal(err)
	}
	if got, want := within(t, rec.gens, "generation notification"), sb.ID+" 2"; got != want {
		t.Errorf("heard %q, want %q (the rolled-back generation must not be heard)", got, want)
	}
	if err := writer.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := within(t, rec.gens, "deletion notification"), sb.ID+" 0"; got != want {
		t.Errorf("heard %q after the deletion, want %q", got, want)
	}
}

func TestListenOnSQLiteReturnsWhenTheContextEnds(t *testing.T) {
	s := openTestStore(t, sqliteBackend)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Listen(ctx, newEventRecorder()); err != nil {
		t.Fatalf("Listen: %v", err)
	}
}

func TestListenResyncsAfterItsConnectionIsKilledAndAfterPostgresRestarts(t *testing.T) {
	// A server of its own: the restart cuts every connection.
	srv, dsn := pgtest.Own(t)
	ctx := context.Background()
	writer := openAt(t, dsn, Options{})
	insertTestKey(t, writer, testKID, KeyActive)
	sb := createTestSandbox(t, writer, "a")
	listener := openAt(t, dsn, Options{})
	rec := newEventRecorder()
	listen(t, listener, rec)
	within(t, rec.resyncs, "Resync after connecting")

	admin := pgAdminOn(t, srv)
	var killed int
	if err := admin.QueryRowContext(ctx,
		"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
		listener.listenName).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminating the listener's backend: killed %d, %v; want 1", killed, err)
	}
	within(t, rec.resyncs, "Resync after the listener's connection was killed")
	if _, err := writer.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
		t.Fatal(err)
	}
	within(t, rec.gens, "generation notification after reconnecting")

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	within(t, rec.resyncs, "Resync after Postgres restarted")
	if _, err := writer.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
		t.Fatal(err)
	}
	if got, want := within(t, rec.gens, "generation notification after the restart"), sb.ID+" 2"; got != want {
		t.Errorf("heard %q, want %q", got, want)
	}
}

// pgAdminOn connects to srv's test database as its superuser.
func pgAdminOn(t *testing.T, srv *pgtest.Server) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", srv.AdminDSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// undoReplicasMigration drops what migration 6 created, for tests that
// take a store back to an older schema.
func undoReplicasMigration(t *testing.T, location string) {
	t.Helper()
	for _, table := range []string{"session_holders", "replicas", "leases"} {
		rawExec(t, location, "DROP TABLE "+table)
	}
}

// holdFencedWrite runs a write transaction under holder's fence and keeps
// it open, its lease check done, until release is closed; it returns when
// the check passed, and the transaction's end arrives on done.
func holdFencedWrite(t *testing.T, s *Store, holder string, epoch uint64, release <-chan struct{}) (done <-chan error) {
	t.Helper()
	checked := make(chan struct{})
	out := make(chan error, 1)
	go func() {
		out <- s.writeTx(WithFence(context.Background(), "leader", holder, epoch), func(tx *txn) error {
			close(checked)
			<-release
			return nil
		})
	}()
	select {
	case <-checked:
	case err := <-out:
		t.Fatalf("the fenced write failed its check: %v", err)
	}
	return out
}

func TestRenewalsDoNotWaitForTheHoldersWritesButATakeoverDoes(t *testing.T) {
	s := openTestStore(t, postgresBackend)
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	l, _, err := s.AcquireLease(ctx, "leader", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}

	// a's own fenced write is in flight: a's renewal goes through.
	release := make(chan struct{})
	done := holdFencedWrite(t, s, "a", l.Epoch, release)
	renewed := make(chan error, 1)
	go func() {
		_, ok, err := s.AcquireLease(ctx, "leader", "a", ttl)
		if err == nil && !ok {
			err = errors.New("refused")
		}
		renewed <- err
	}()
	select {
	case err := <-renewed:
		if err != nil {
			t.Fatalf("renewal: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a's renewal waited for a's own fenced write")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Another fenced write of a is in flight when a's lease expires: b's
	// takeover waits for it to end, so it commits under a's epoch.
	release = make(chan struct{})
	done = holdFencedWrite(t, s, "a", l.Epoch, release)
	time.Sleep(ttl + ttl/2)
	var writeEnded atomic.Bool
	took := make(chan Lease, 1)
	go func() {
		l, ok, err := s.AcquireLease(ctx, "leader", "b", ttl)
		if err != nil || !ok {
			t.Errorf("b's takeover: %v, %v", ok, err)
		}
		if !writeEnded.Load() {
			t.Error("b took the lease while a's fenced write was still open")
		}
		took <- l
	}()
	time.Sleep(300 * time.Millisecond) // b's takeover is now waiting, or wrongly done
	writeEnded.Store(true)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("a's fenced write, checked while a held the lease: %v", err)
	}
	if l := <-took; l.Holder != "b" || l.Epoch != 2 {
		t.Errorf("takeover gave %+v, want b at epoch 2", l)
	}
}
