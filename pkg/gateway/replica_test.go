package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/pkg/store/pgtest"
)

// postgres is the package's Postgres server, started by the first test
// that needs it and stopped by TestMain.
var postgres pgtest.Shared

// replicaLease is the leader lease of the replica tests: the shortest
// accepted, so takeovers take seconds.
const replicaLease = MinLeaderLease

// fakeCluster is a fake driver standing for the one compute cluster that
// every replica's driver talks to (the Kubernetes driver in production):
// shared by the replicas of a test, it remembers which sandboxes run and
// runs nothing.
type fakeCluster struct {
	mu      sync.Mutex
	running map[string]bool
	// delivery is how its sandboxes get their tokens: DeliveryDirBind
	// unless a test sets DeliveryK8sSA, as the Kubernetes driver says.
	delivery driver.TokenDelivery
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{running: make(map[string]bool), delivery: driver.DeliveryDirBind}
}

func (c *fakeCluster) Name() string                        { return "fake" }
func (c *fakeCluster) TokenDelivery() driver.TokenDelivery { return c.delivery }
func (c *fakeCluster) Create(context.Context, driver.Spec) error {
	return nil
}

func (c *fakeCluster) Start(_ context.Context, spec driver.Spec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running[spec.SandboxID] = true
	return nil
}

func (c *fakeCluster) Stop(_ context.Context, id string, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.running, id)
	return nil
}

func (c *fakeCluster) Delete(ctx context.Context, id string) error { return c.Stop(ctx, id, 0) }

func (c *fakeCluster) Status(_ context.Context, id string) (driver.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[id] {
		return driver.Status{State: driver.StateRunning}, nil
	}
	return driver.Status{State: driver.StateMissing}, nil
}

// replicaCluster is several gateways in replica mode on one real Postgres
// schema, each with its own state directory, all on one fakeCluster.
type replicaCluster struct {
	t   testing.TB
	dsn string
	drv *fakeCluster
}

func newReplicaCluster(t testing.TB) *replicaCluster {
	t.Helper()
	return &replicaCluster{t: t, dsn: postgres.NewSchema(t), drv: newFakeCluster()}
}

// replica is one running gateway of a replicaCluster.
type replica struct {
	t      testing.TB
	g      *Gateway
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (c *replicaCluster) config() Config {
	return Config{
		StateDir: shortTempDir(c.t) + "/state", Store: c.dsn, Lifetime: time.Minute, StopGrace: time.Second,
		Drivers: map[string]driver.Driver{"fake": c.drv}, DefaultDriver: "fake",
		ReplicaAdvertise: "127.0.0.1:7443", LeaderLease: replicaLease,
		Jitter: func() float64 { return 0 },
	}
}

// start opens a replica and runs its Serve until the test ends.
func (c *replicaCluster) start() *replica {
	c.t.Helper()
	return c.startWith(c.config())
}

func (c *replicaCluster) startWith(cfg Config) *replica {
	c.t.Helper()
	g, err := Open(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{t: c.t, g: g, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		g.Serve(ctx)
	}()
	c.t.Cleanup(r.stop)
	return r
}

// stop ends the replica cleanly: it gives the lease up and leaves the
// registry.
func (r *replica) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.g.Close()
	})
}

// kill ends the replica as a killed process ends: lease and registration
// are left to expire.
func (r *replica) kill() {
	r.g.abandonOnStop = true
	r.stop()
}

// leaders returns the replicas that think they lead.
func leaders(rs ...*replica) []*replica {
	var out []*replica
	for _, r := range rs {
		if ok, _ := r.g.Leader(); ok {
			out = append(out, r)
		}
	}
	return out
}

// waitLeader waits for exactly one of rs to lead and returns it.
func waitLeader(t testing.TB, rs ...*replica) *replica {
	t.Helper()
	var one *replica
	waitForTB(t, "one leader", 20*time.Second, func() bool {
		ls := leaders(rs...)
		if len(ls) > 1 {
			t.Fatalf("%d replicas lead at once", len(ls))
		}
		if len(ls) == 1 {
			one = ls[0]
		}
		return one != nil
	})
	return one
}

func waitForTB(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *replica) create(name string) Sandbox {
	r.t.Helper()
	sb, err := r.g.Create(context.Background(), CreateRequest{Name: name, Start: true,
		Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		r.t.Fatal(err)
	}
	return sb
}

func TestReplicasHaveOneLeaderAtATimeAndAKilledLeaderIsReplacedAfterItsLease(t *testing.T) {
	c := newReplicaCluster(t)
	rs := []*replica{c.start(), c.start(), c.start()}
	first := waitLeader(t, rs...)
	_, epoch := first.g.Leader()
	// For a few renewals, never two leaders.
	for end := time.Now().Add(replicaLease); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if ls := leaders(rs...); len(ls) != 1 {
			t.Fatalf("%d leaders, want exactly one", len(ls))
		}
	}
	if got := testutil.ToFloat64(first.g.metrics.leader); got != 1 {
		t.Errorf("sandkey_leader of the leader = %v, want 1", got)
	}

	killed := time.Now()
	first.kill()
	var rest []*replica
	for _, r := range rs {
		if r != first {
			rest = append(rest, r)
		}
	}
	second := waitLeader(t, rest...)
	took := time.Since(killed)
	_, epoch2 := second.g.Leader()
	t.Logf("leader killed; replaced after %v (lease %v), epoch %d -> %d", took, replicaLease, epoch, epoch2)
	if epoch2 <= epoch {
		t.Errorf("new leader's epoch %d, want above %d", epoch2, epoch)
	}
	if took < replicaLease/2 {
		t.Errorf("replaced after %v: the killed leader's lease (%v) cannot have expired", took, replicaLease)
	}
}

func TestADeposedLeadersSweepCommitsNothing(t *testing.T) {
	c := newReplicaCluster(t)
	a := c.start()
	if waitLeader(t, a) != a {
		t.Fatal("the only replica does not lead")
	}
	sb := a.create("fenced")
	_, epoch := a.g.Leader()
	a.kill()
	b := c.start()
	waitLeader(t, b)
	b.stop() // nobody sweeps from here on: only the deposed leader tries

	ctx := context.Background()
	st, err := store.Open(ctx, c.dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.MarkRunningDue(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := st.GetSandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The deposed leader wakes up and sweeps under its old term's fence.
	deposed, err := Open(ctx, func() Config { cfg := c.config(); cfg.ReplicaAdvertise = "127.0.0.1:7444"; return cfg }())
	if err != nil {
		t.Fatal(err)
	}
	deposed.replicaID = a.g.replicaID
	defer deposed.Close()
	n, err := deposed.Sweep(store.WithFence(ctx, leaderLease, a.g.replicaID, epoch))
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("the deposed leader's sweep: rotated %d, %v; want ErrFenced", n, err)
	}
	after, err := st.GetSandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.LatestGen != before.LatestGen {
		t.Fatalf("latest generation %d after the deposed sweep, want %d: it committed", after.LatestGen, before.LatestGen)
	}
}

// supervisor is a real session client connected to one replica's shared
// listener, holding its tokens in memory (no token directory: what reaches
// it comes over its session).
type supervisor struct {
	src    *source.Source
	client *session.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// connect starts a supervisor of sb on r's shared session listener,
// holding first (the token it starts with), and waits for its session.
func connect(t testing.TB, r *replica, sandboxID string, first *auth.Token, jwks []byte) *supervisor {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.g.ServeShared("tcp", l); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	src, err := source.New(ctx, source.Config{SandboxID: sandboxID})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Offer(first.Raw(), jwks, "test"); err != nil {
		t.Fatal(err)
	}
	c, err := session.NewClient(session.ClientConfig{Target: "tcp://" + l.Addr().String(), SandboxID: sandboxID,
		InstanceID: "i-1", Source: src, Backoff: session.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	s := &supervisor{src: src, client: c, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); c.Run(ctx) }()
	t.Cleanup(s.close)
	waitForTB(t, "a session on the replica", 20*time.Second, func() bool { return r.g.sessions.Connected(sandboxID) })
	return s
}

func (s *supervisor) close() {
	s.cancel()
	<-s.done
	s.client.Close()
	s.src.Close()
}

// dirToken reads the token a replica wrote into its token directory.
func (r *replica) dirToken(t testing.TB, id string) *auth.Token {
	t.Helper()
	raw, err := tokendir.ReadToken(r.g.tokenDir(id))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := r.g.verify.Verify(strings.TrimSpace(string(raw)), id)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAGenerationMintedOnOneReplicaReachesTheSessionAnotherHolds(t *testing.T) {
	c := newReplicaCluster(t)
	a, b := c.start(), c.start()
	sb := a.create("fanned")
	sup := connect(t, b, sb.ID, a.dirToken(t, sb.ID), a.g.JWKSJSON())

	ctx := context.Background()
	waitForTB(t, "replica a sees b as the session's holder", 10*time.Second, func() bool {
		h, err := a.g.SessionHolder(ctx, sb.ID)
		return err == nil && !h.Local && h.Connected && h.ReplicaID == b.g.ReplicaID() && h.AdminAddr == "127.0.0.1:7443"
	})

	all, err := a.g.SessionHolders(ctx, []string{sb.ID})
	if err != nil || all[sb.ID].ReplicaID != b.g.ReplicaID() || all[sb.ID].Local {
		t.Fatalf("a's SessionHolders = %v, %v; want %s held by b", all, err, sb.ID)
	}
	if all, err := b.g.SessionHolders(ctx, []string{sb.ID}); err != nil || !all[sb.ID].Local || !all[sb.ID].Connected {
		t.Fatalf("b's SessionHolders = %v, %v; want %s held here", all, err, sb.ID)
	}

	gen, err := a.g.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitForTB(t, fmt.Sprintf("generation %d at the supervisor connected to b", gen), 10*time.Second, func() bool {
		cur := sup.src.Current()
		return cur != nil && cur.Gen() == gen
	})
	if got, want := sup.src.Current().Raw(), a.dirToken(t, sb.ID).Raw(); got != want {
		t.Errorf("b pushed another token than the one a minted for generation %d", gen)
	}
	if got := testutil.ToFloat64(b.g.metrics.fanout.WithLabelValues(fanoutPushed)); got < 1 {
		t.Errorf("sandkey_fanout_total{result=pushed} on b = %v, want at least 1", got)
	}

	// The session ends: no replica holds it any more.
	sup.close()
	waitForTB(t, "the holder record cleared", 10*time.Second, func() bool {
		h, err := a.g.SessionHolder(ctx, sb.ID)
		return err == nil && h.Local && !h.Connected
	})
}

// A replica that minted a sandbox's token (as leader, say) and does not
// hold its session must not answer a later Hello there with that token
// once another replica has minted a newer one: the pull at Hello is what
// covers a push the supervisor missed while it moved.
func TestASessionMovingToAnotherReplicaIsGivenTheNewestGenerationAtHello(t *testing.T) {
	c := newReplicaCluster(t)
	a, b := c.start(), c.start()
	sb := a.create("mover")
	first := a.dirToken(t, sb.ID) // a minted it, and caches it
	sup := connect(t, b, sb.ID, first, a.g.JWKSJSON())
	ctx := context.Background()
	gen, err := b.g.Rotate(ctx, sb.ID) // minted on b, which holds the session
	if err != nil {
		t.Fatal(err)
	}
	waitForTB(t, fmt.Sprintf("generation %d at the supervisor on b", gen), 10*time.Second, func() bool {
		cur := sup.src.Current()
		return cur != nil && cur.Gen() == gen
	})
	sup.close()
	waitForTB(t, "a has heard of generation "+fmt.Sprint(gen), 10*time.Second, func() bool {
		tok := a.g.cachedToken(sb.ID)
		return tok == nil || tok.Gen() >= gen
	})

	// A supervisor that missed generation gen (it still holds the first,
	// which is one of the two newest and so still accepted) registers on a.
	moved := connect(t, a, sb.ID, first, a.g.JWKSJSON())
	waitForTB(t, fmt.Sprintf("generation %d given at the Hello on a", gen), 10*time.Second, func() bool {
		cur := moved.src.Current()
		return cur != nil && cur.Gen() == gen
	})
}

func TestKeysRotatedOnOneReplicaAreInTheOthersJWKS(t *testing.T) {
	c := newReplicaCluster(t)
	a, b := c.start(), c.start()
	ctx := context.Background()
	rot, err := a.g.RotateKeys(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	waitForTB(t, "the next key in b's JWKS", 10*time.Second, func() bool {
		return strings.Contains(string(b.g.JWKSJSON()), rot.KID)
	})
	if _, err := a.g.RotateKeys(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitForTB(t, "b signing with the key a activated", 10*time.Second, func() bool {
		return b.g.keys.Active().KID == rot.KID
	})
	// A generation b re-signs with the new key is a's token to the byte.
	sb := a.create("newkey")
	tok := a.dirToken(t, sb.ID)
	if tok.KID() != rot.KID {
		t.Fatalf("a minted with %s, want the activated %s", tok.KID(), rot.KID)
	}
	again, err := b.g.Latest(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Raw() != tok.Raw() {
		t.Error("b's latest token differs from the one a minted")
	}
}

func TestConcurrentRotationsOnSeveralReplicasNeverIssueAGenerationTwice(t *testing.T) {
	c := newReplicaCluster(t)
	rs := []*replica{c.start(), c.start(), c.start()}
	var ids []string
	for i := range 4 {
		ids = append(ids, rs[0].create(fmt.Sprintf("busy%d", i)).ID)
	}
	const perReplica = 8
	ctx := context.Background()
	var mu sync.Mutex
	seen := make(map[string]int) // "id gen" -> times issued
	var wg sync.WaitGroup
	for _, r := range rs {
		for _, id := range ids {
			wg.Go(func() {
				for range perReplica {
					gen, err := r.g.Rotate(ctx, id)
					if err != nil {
						t.Errorf("rotate %s on %s: %v", id, r.g.ReplicaID(), err)
						return
					}
					mu.Lock()
					seen[fmt.Sprintf("%s %d", id, gen)]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for k, n := range seen {
		if n > 1 {
			t.Errorf("generation %s issued %d times", k, n)
		}
	}
	for _, id := range ids {
		sb, err := rs[1].g.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// Generation 1 at start, the rotations on top, perhaps a sweep's.
		if min := uint64(1 + len(rs)*perReplica); sb.LatestGen < min {
			t.Errorf("sandbox %s at generation %d, want at least %d", id, sb.LatestGen, min)
		}
	}
}

func TestAReplicaWhoseStoreHangsIsNotReadyAndStopsLeaderWorkByItsDeadline(t *testing.T) {
	c := newReplicaCluster(t)
	a := c.start()
	waitLeader(t, a)
	waitForTB(t, "ready", 10*time.Second, func() bool { ok, _ := a.g.Ready(); return ok })

	// An administrator's transaction holds the lease table: renewals hang.
	admin := postgresAdmin(t, c.dsn)
	ctx := context.Background()
	tx, err := admin.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "LOCK TABLE leases IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	waitForTB(t, "leader work stopped", 3*replicaLease, func() bool { ok, _ := a.g.Leader(); return !ok })
	if stopped := time.Since(locked); stopped > replicaLease+replicaLease/3 {
		t.Errorf("leader work stopped %v after renewals began to fail, want within the lease %v", stopped, replicaLease)
	}
	waitForTB(t, "not ready", 10*time.Second, func() bool { ok, _ := a.g.Ready(); return !ok })
	if got := testutil.ToFloat64(a.g.metrics.leader); got != 0 {
		t.Errorf("sandkey_leader = %v once leader work stopped, want 0", got)
	}
	if _, why := a.g.Ready(); !strings.HasPrefix(why, "store: ") {
		t.Errorf("readiness reason %q, want it to start with \"store: \"", why)
	}
	if got := testutil.ToFloat64(a.g.metrics.storeUp); got != 0 {
		t.Errorf("sandkey_store_up = %v while the store hangs, want 0", got)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	waitForTB(t, "ready and leading again", 20*time.Second, func() bool {
		ok, _ := a.g.Ready()
		lead, _ := a.g.Leader()
		return ok && lead
	})
}

func TestASingleGatewayOnPostgresRefusesToJoinLiveReplicas(t *testing.T) {
	c := newReplicaCluster(t)
	c.start()
	cfg := c.config()
	cfg.ReplicaAdvertise = ""
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrReplicaConflict) || !strings.Contains(err.Error(), "--replica-advertise") {
		t.Fatalf("a single gateway beside a live replica: %v, want ErrReplicaConflict saying why", err)
	}
	other := c.config()
	other.Issuer = "someone-else"
	_, err = Open(context.Background(), other)
	if !errors.Is(err, ErrReplicaConflict) || !strings.Contains(err.Error(), "--issuer") {
		t.Fatalf("a replica with another issuer: %v, want ErrReplicaConflict naming --issuer", err)
	}
}

// postgresAdmin connects to the schema of dsn as the server's superuser,
// to do to the store what an administrator (or an outage) would.
func postgresAdmin(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", postgres.Server(t).AdminDSN(pgtest.Database)+" search_path="+u.Query().Get("search_path"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestReplicasCarryOnAfterPostgresRestarts(t *testing.T) {
	// A server of its own: the restart cuts every connection.
	srv, dsn := pgtest.Own(t)
	c := &replicaCluster{t: t, dsn: dsn, drv: newFakeCluster()}
	a, b := c.start(), c.start()
	sb := a.create("restarted")
	sup := connect(t, b, sb.ID, a.dirToken(t, sb.ID), a.g.JWKSJSON())
	for _, r := range []*replica{a, b} {
		waitForTB(t, "ready", 10*time.Second, func() bool { ok, _ := r.g.Ready(); return ok })
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Both come back: the pools reconnect, the listeners reconnect and
	// resync, one of them leads.
	waitForTB(t, "both ready again", 30*time.Second, func() bool {
		okA, _ := a.g.Ready()
		okB, _ := b.g.Ready()
		return okA && okB
	})
	waitLeader(t, a, b)
	gen, err := a.g.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatalf("rotate after the restart: %v", err)
	}
	waitForTB(t, fmt.Sprintf("generation %d at the supervisor on b after the restart", gen), 20*time.Second, func() bool {
		cur := sup.src.Current()
		return cur != nil && cur.Gen() >= gen
	})
}

func TestANewLeaderRemintsNothingFreshForSandboxesWithoutATokenDirectory(t *testing.T) {
	c := newReplicaCluster(t)
	c.drv.delivery = driver.DeliveryK8sSA
	a := c.start()
	waitLeader(t, a)
	sb := a.create("pod")
	a.kill()
	b := c.start()
	waitLeader(t, b)
	// A sweep has run, so the reconcile that precedes it is done.
	waitForTB(t, "b's first sweep", 10*time.Second, func() bool { return b.g.lastPrune.Load() != 0 })
	got, err := b.g.Get(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LatestGen != sb.LatestGen {
		t.Errorf("generation %d after the new leader reconciled, want %d: a fresh token was minted again", got.LatestGen, sb.LatestGen)
	}
	if n := testutil.ToFloat64(b.g.metrics.minted.WithLabelValues("reconcile")); n != 0 {
		t.Errorf("the new leader's reconcile minted %v generations, want 0", n)
	}
	// Its latest token is the one a minted, signed again.
	tok, err := b.g.Latest(context.Background(), sb.ID)
	if err != nil || tok.Gen() != sb.LatestGen {
		t.Fatalf("b's latest token: %v, %v; want generation %d", tok, err, sb.LatestGen)
	}
}

func TestDeletingASandboxOnOneReplicaEndsItsSessionOnAnother(t *testing.T) {
	c := newReplicaCluster(t)
	a, b := c.start(), c.start()
	sb := a.create("deleted")
	connect(t, b, sb.ID, a.dirToken(t, sb.ID), a.g.JWKSJSON())
	if err := a.g.Delete(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	waitForTB(t, "b ends the deleted sandbox's session", 10*time.Second, func() bool { return !b.g.sessions.Connected(sb.ID) })
	if tok := b.g.cachedToken(sb.ID); tok != nil {
		t.Errorf("b still caches %v of the deleted sandbox", tok)
	}
}

func TestReplicaSettingsAreCheckedAtOpen(t *testing.T) {
	base := Config{StateDir: "/tmp/state", Drivers: map[string]driver.Driver{"fake": newFakeCluster()}}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"replica on SQLite", func(c *Config) { c.ReplicaAdvertise = "10.0.0.1:7443" }, "needs a Postgres store"},
		{"lease under 3s", func(c *Config) { c.LeaderLease = time.Second }, "leader lease 1s: must be at least 3s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			if err := cfg.CheckSettings(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckSettings = %v, want an error saying %q", err, tt.want)
			}
		})
	}
	cfg := base
	cfg.setDefaults()
	if cfg.LeaderLease != DefaultLeaderLease || cfg.ReplicaAdvertise != "" {
		t.Errorf("defaults: lease %v, advertise %q; want %v and a single gateway", cfg.LeaderLease, cfg.ReplicaAdvertise, DefaultLeaderLease)
	}
}

func TestASingleGatewayOnPostgresRestartsAtOnceAfterACrash(t *testing.T) {
	c := newReplicaCluster(t)
	cfg := c.config()
	cfg.ReplicaAdvertise = ""
	first := c.startWith(cfg)
	waitLeader(t, first)
	first.kill() // its registration stays live for a lease
	// The same state directory: the lock proves the first one is gone.
	second := c.startWith(cfg)
	waitLeader(t, second)
	other := c.config()
	other.ReplicaAdvertise = ""
	if _, err := Open(context.Background(), other); !errors.Is(err, ErrReplicaConflict) {
		t.Fatalf("a single gateway on another state directory: %v, want ErrReplicaConflict", err)
	}
}
