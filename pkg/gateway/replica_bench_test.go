package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/pkg/testclock"
)

// BenchmarkFanout is the latency from a rotation on one replica to the
// token's arrival at a supervisor whose session another replica holds:
// the commit on replica a, NOTIFY, b's re-signing from the stored claims,
// and the push over the real session. It reports the p50 and p99 of all
// iterations (fanout-p50-ms, fanout-p99-ms).
func BenchmarkFanout(b *testing.B) {
	c := newReplicaCluster(b)
	a, r := c.start(), c.start()
	sb := a.create("fanout")
	sup := connect(b, r, sb.ID, a.dirToken(b, sb.ID), a.g.JWKSJSON())
	tokens, cancel := sup.src.Subscribe()
	defer cancel()
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		gen, err := a.g.Rotate(ctx, sb.ID)
		if err != nil {
			b.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
		for arrived := false; !arrived; {
			select {
			case tok := <-tokens:
				arrived = tok.Gen() >= gen
			case <-timeout:
				b.Fatalf("generation %d did not reach the supervisor on the other replica within 10s", gen)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "fanout-p50-ms")
	b.ReportMetric(pct(0.99), "fanout-p99-ms")
}

// BenchmarkSweepPostgres is BenchmarkSweep on a Postgres store, in the
// same run: every sandbox rotated at once, under the leader's fence as the
// leader sweeps, the token directories on a tmpfs.
func BenchmarkSweepPostgres(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newPostgresBenchEnv(b, n)
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				e.clock.Add(lifetime) // everything is due again
				l, ok, err := e.g.store.AcquireLease(ctx, leaderLease, e.g.replicaID, DefaultLeaderLease)
				if err != nil || !ok {
					b.Fatalf("take the leader lease: %v, %v", ok, err)
				}
				fenced := store.WithFence(ctx, leaderLease, e.g.replicaID, l.Epoch)
				b.StartTimer()
				rotated, err := e.g.Sweep(fenced)
				if err != nil || rotated != n {
					b.Fatalf("sweep rotated %d (%v), want %d", rotated, err, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// newPostgresBenchEnv opens a single gateway on a fresh Postgres schema
// holding n running sandboxes, each at generation 1 (minted by the
// gateway's reconcile at open, outside the timing), with its state and
// token directories on tmpfs.
func newPostgresBenchEnv(b *testing.B, n int) *env {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "sk")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: b, dir: dir, clock: testclock.New(time.Now().Truncate(time.Second)), store: postgres.NewSchema(b)}
	e.tokenRoot = memoryTokenRoot(b)
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		b.Fatal(err)
	}
	e.drv = &checkingDriver{Driver: benchDriver{}, t: b, g: func() *Gateway { return e.g }}
	e.openBench() // creates the schema and the first key
	e.g.Close()
	e.g = nil
	// One statement seeds them all: one transaction each takes longer
	// than the benchmark.
	admin := postgresAdmin(b, e.store)
	if _, err := admin.Exec(`INSERT INTO sandboxes (id, name, driver, state, spec, instance_id, created_at, updated_at)
		SELECT md5(i::text), 'sb-' || i, 'process', 'running', '{"command":["true"]}', 'bench', 1, 1
		FROM generate_series(1, $1) AS i`, n); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	e.openBench() // reconcile mints generation 1 of each
	b.Logf("seeded %d sandboxes on Postgres in %s", n, time.Since(start).Round(time.Millisecond))
	b.Cleanup(func() {
		if e.g != nil {
			e.g.Close()
		}
	})
	return e
}
