package replicas

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/store/pgtest"
	"github.com/sandkey/sandkey/test/kubeenv"
)

// downFor is how long the test keeps Postgres down: several lease
// renewals and sweeps, well within a token's lifetime.
const downFor = 3 * time.Second

// rotationLoad rotates sandboxes through every replica in turn, as
// operators would, until stopped, recording what each rotation minted.
type rotationLoad struct {
	rs    *replicaSet
	names []string

	mu     sync.Mutex
	minted map[string][]uint64 // by sandbox name, the generations rotations returned
	failed int
	errs   []string
}

func (l *rotationLoad) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		name := l.names[i%len(l.names)]
		r := l.rs.replicas[i%len(l.rs.replicas)]
		if !r.alive() {
			continue
		}
		out, err := r.cli("sandbox", "rotate", name, "-o", "json")
		l.mu.Lock()
		if err != nil {
			l.failed++
			if len(l.errs) < 3 {
				l.errs = append(l.errs, err.Error())
			}
		} else if gen, ok := parseGen(out); ok {
			l.minted[name] = append(l.minted[name], gen)
		}
		l.mu.Unlock()
		if err != nil {
			time.Sleep(100 * time.Millisecond) // no busy loop while the database is down
		}
	}
}

// parseGen is rotatedGen without a test to fail.
func parseGen(out string) (uint64, bool) {
	var gen uint64
	i := strings.Index(out, `"gen":`)
	if i < 0 {
		return 0, false
	}
	_, err := fmt.Sscanf(strings.TrimLeft(out[i+len(`"gen":`):], " "), "%d", &gen)
	return gen, err == nil
}

// Acceptance 3: Postgres restarted under load. While it is down every
// replica's /readyz says not ready, naming the store; once it is back the
// replicas reconnect and are ready again, nothing is minted twice, and
// sessions get the generations minted after the restart, those minted on
// other replicas included (fan-out, and its resync after the listener's
// reconnect).
func TestReplicasPostgresRestart(t *testing.T) {
	rs := newReplicaSet(t)
	names, ids := rs.createSpread(replicaCount)
	rs.awaitLeader(kubeenv.Bound)

	ctx, stopLoad := context.WithCancel(context.Background())
	load := &rotationLoad{rs: rs, names: names, minted: map[string][]uint64{}}
	var loadDone sync.WaitGroup
	loadDone.Go(func() { load.run(ctx) })
	defer func() { stopLoad(); loadDone.Wait() }()
	time.Sleep(2 * time.Second) // rotations under way

	held := rs.awaitHeld(ids)
	downAt := time.Now()
	if err := rs.pg.StopServer(); err != nil {
		t.Fatal(err)
	}
	// Every replica goes not ready, and stays so while Postgres is down;
	// some reason it gives names the store.
	notReadyAt := map[int]time.Duration{}
	reasons := map[int][]string{}
	rs.eventually("every replica not ready while Postgres is down", kubeenv.Bound/3, func() bool {
		for _, r := range rs.replicas {
			if _, seen := notReadyAt[r.n]; seen {
				continue
			}
			if ok, why := r.ready(); !ok {
				notReadyAt[r.n] = time.Since(downAt)
				reasons[r.n] = append(reasons[r.n], why)
			}
		}
		return len(notReadyAt) == len(rs.replicas)
	})
	for time.Now().Before(downAt.Add(downFor)) {
		for _, r := range rs.replicas {
			ok, why := r.ready()
			if ok {
				t.Errorf("replica %d says ready %s after Postgres went down", r.n, time.Since(downAt).Round(time.Millisecond))
			} else if !contains(reasons[r.n], why) {
				reasons[r.n] = append(reasons[r.n], why)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, r := range rs.replicas {
		t.Logf("replica %d: not ready %s after Postgres went down; first reason: %q", r.n, notReadyAt[r.n].Round(time.Millisecond), reasons[r.n][0])
		// "store: ..." from the store heartbeat; a leader whose sweep
		// failed first says "cannot mint tokens: ..." with the
		// database's error.
		named := false
		for _, why := range reasons[r.n] {
			named = named || strings.Contains(why, "store: ") || strings.Contains(why, "database="+pgtest.Database)
		}
		if !named {
			t.Errorf("replica %d's /readyz while Postgres was down never named the store or the database: %q", r.n, reasons[r.n])
		}
	}
	upAt := time.Now()
	if err := rs.pg.StartServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Postgres down %s", upAt.Sub(downAt).Round(time.Millisecond))
	// Readiness is watched from now, beside the mints below.
	readyAgain := map[int]time.Duration{}
	stillNot := map[int]string{}
	var readyDone sync.WaitGroup
	readyDone.Go(func() {
		for deadline := upAt.Add(kubeenv.Bound / 3); len(readyAgain) < len(rs.replicas) && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			for _, r := range rs.replicas {
				if _, seen := readyAgain[r.n]; !seen {
					if ok, why := r.ready(); ok {
						readyAgain[r.n] = time.Since(upAt)
						delete(stillNot, r.n)
					} else {
						stillNot[r.n] = why
					}
				}
			}
		}
	})
	clients := map[*replica]adminpb.AdminClient{}
	for _, r := range rs.replicas {
		clients[r] = rs.adminClient(r)
	}

	// At once, while the replicas' store listeners are still backing
	// off, mint on replicas that do not hold the sessions: only the
	// fan-out's resync after each listener reconnects brings these to the
	// supervisors (NOTIFY, for any minted after).
	mints := rs.mintOnNonHolders(t, clients, names, func(name string) *replica { return held[ids[name]] }, 10*time.Second)
	want := map[string]uint64{}
	for _, m := range mints {
		want[m.name] = max(want[m.name], m.gen)
	}
	readyDone.Wait() // the maps are the test goroutine's again
	if len(readyAgain) < len(rs.replicas) {
		t.Fatalf("not every replica ready %s after Postgres came back: %v", kubeenv.Bound/3, stillNot)
	}
	for _, r := range rs.replicas {
		t.Logf("replica %d: ready again %s after Postgres came back", r.n, readyAgain[r.n].Round(time.Millisecond))
	}
	leader := rs.awaitLeader(2*lease + 5*time.Second)
	t.Logf("replica %d leads after the restart", leader.n)

	time.Sleep(2 * time.Second) // more rotations after the restart
	stopLoad()
	loadDone.Wait()
	for _, name := range names {
		want[name] = max(want[name], rs.latestGeneration(ids[name]).gen)
	}
	for _, name := range names {
		name := name
		rs.eventually(fmt.Sprintf("%s acknowledges gen %d, minted after the restart", name, want[name]), 30*time.Second, func() bool {
			d, err := rs.deliveredGen(ids[name])
			return err == nil && d >= want[name]
		})
	}

	// Which of those mints only the resync could deliver: committed
	// before the holder's store listener was connected again.
	byResync := mintedWhileAway(mints, upAt)
	t.Logf("%d generations minted on other replicas after the restart, all acknowledged; %d of them before the holder's listener was back (the resync's)", len(mints), byResync)

	load.mu.Lock()
	total := 0
	for name, gens := range load.minted {
		total += len(gens)
		seen := map[uint64]bool{}
		for _, g := range gens {
			if seen[g] {
				t.Errorf("sandbox %s: two rotations returned gen %d", name, g)
			}
			seen[g] = true
		}
	}
	t.Logf("load: %d rotations through the replicas, %d refused while Postgres was down (%v)", total, load.failed, load.errs)
	load.mu.Unlock()
	if total == 0 {
		t.Errorf("no rotation succeeded under load")
	}
	t.Logf("%d generations checked: one jti each, as stored", rs.checkNoGenerationTwice())
}

// The fan-out's catch-up: a generation committed while the holder's
// store listener is disconnected (its LISTEN connection cut, the rest of
// the database up) reaches the supervisor once the listener reconnects
// and resyncs; no NOTIFY is kept for a listener that was away.
func TestReplicasFanOutResyncsAfterItsListenerIsCut(t *testing.T) {
	rs := newReplicaSet(t)
	names, ids := rs.createSpread(replicaCount)
	held := rs.awaitHeld(ids)
	admin, err := sql.Open("pgx", rs.pg.AdminDSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	clients := map[*replica]adminpb.AdminClient{}
	for _, r := range rs.replicas {
		clients[r] = rs.adminClient(r)
	}

	// Cut, then mint at once, within the listeners' first backoff
	// (100 ms); again if the machine was too slow for any mint to land
	// before its holder's listener was back.
	for attempt := 1; ; attempt++ {
		cutAt := time.Now()
		n := rs.cutListeners(admin)
		mints := rs.mintOnNonHolders(t, clients, names, func(name string) *replica { return held[ids[name]] }, 0)
		if t.Failed() {
			t.FailNow()
		}
		// Each sandbox acknowledges the newest generation minted for it,
		// as that generation: had a later one (the leader's sweep) come
		// first, it would prove nothing about the resync.
		want := map[string]uint64{}
		for _, m := range mints {
			want[m.name] = max(want[m.name], m.gen)
		}
		overtaken := false
		for name, gen := range want {
			var delivered, latest int64
			rs.eventually(fmt.Sprintf("%s acknowledges gen %d", name, gen), 30*time.Second, func() bool {
				err := rs.db.QueryRow(`SELECT delivered_gen, latest_gen FROM sandboxes WHERE id = $1`, ids[name]).Scan(&delivered, &latest)
				return err == nil && uint64(delivered) >= gen
			})
			if uint64(latest) > gen {
				overtaken = true
				t.Logf("attempt %d: %s: gen %d overtaken by gen %d before its acknowledgement", attempt, name, gen, latest)
			}
		}
		missed := mintedWhileAway(mints, cutAt)
		t.Logf("attempt %d: %d listener connection(s) cut; %d generations minted on other replicas, all acknowledged, %d of them while the holder's listener was away",
			attempt, n, len(mints), missed)
		if missed > 0 && !overtaken {
			break
		}
		if attempt == 3 {
			t.Fatalf("in %d attempts, no mint landed while a listener was away, or a newer generation overtook one: the resync was not exercised", attempt)
		}
	}
	t.Logf("%d generations checked: one jti each, as stored", rs.checkNoGenerationTwice())
}

// cutListeners ends every replica's store listener connection (as a
// network blip or a proxy's idle timeout would), waits until the
// server has let go of them, and returns how many it cut.
func (rs *replicaSet) cutListeners(admin *sql.DB) int {
	rs.t.Helper()
	rows, err := admin.Query(`SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'sandkey-listen-%'`)
	if err != nil {
		rs.t.Fatal(err)
	}
	var pids []int64
	for rows.Next() {
		var pid int64
		if err := rows.Scan(&pid); err != nil {
			rs.t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	rows.Close()
	if len(pids) < replicaCount {
		rs.t.Fatalf("%d store listener connections, want one per replica (%d)", len(pids), replicaCount)
	}
	for _, pid := range pids {
		if _, err := admin.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
			rs.t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		var left int
		if err := admin.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, pids).Scan(&left); err != nil {
			rs.t.Fatal(err)
		}
		if left == 0 {
			return len(pids)
		}
		if time.Now().After(deadline) {
			rs.t.Fatalf("%d store listener connection(s) still there 5 s after pg_terminate_backend", left)
		}
	}
}

// nonHolderMint is a generation minted on a replica that does not hold
// the sandbox's session.
type nonHolderMint struct {
	name   string
	gen    uint64
	holder *replica
	at     time.Time
}

// mintOnNonHolders rotates each sandbox of names once on every replica
// but the holder of its session, trying each for up to retry (0: once).
func (rs *replicaSet) mintOnNonHolders(t *testing.T, clients map[*replica]adminpb.AdminClient, names []string, holderOf func(name string) *replica, retry time.Duration) []nonHolderMint {
	t.Helper()
	var mints []nonHolderMint
	for _, name := range names {
		h := holderOf(name)
		for _, r := range rs.replicas {
			if r == h {
				continue
			}
			gen, err := mintElsewhere(context.Background(), clients[r], name)
			for deadline := time.Now().Add(retry); err != nil && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				gen, err = mintElsewhere(context.Background(), clients[r], name)
			}
			if err != nil {
				t.Errorf("mint %s on replica %d: %v", name, r.n, err)
				continue
			}
			mints = append(mints, nonHolderMint{name, gen, h, time.Now()})
		}
	}
	return mints
}

// mintedWhileAway counts the mints committed before their holder's store
// listener connected again, its first connection after since.
func mintedWhileAway(mints []nonHolderMint, since time.Time) int {
	n := 0
	for _, m := range mints {
		for _, e := range m.holder.events("store listener connected") {
			if e.At.After(since) {
				if m.at.Before(e.At) {
					n++
				}
				break
			}
		}
	}
	return n
}
