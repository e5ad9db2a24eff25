package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/store"
)

// BenchmarkSweep rotates every sandbox of a gateway at once: the store
// transaction, the signatures and the token directory writes (the process
// driver starts nothing: sandboxes are marked running in the store only).
// Beside it, BenchmarkMintOnly is the raw signing cost of the same count in
// the same run.
func BenchmarkSweep(b *testing.B) { benchmarkSweep(b, func(testing.TB) string { return "" }) }

// BenchmarkSweepPostgres is BenchmarkSweep with the store in Postgres (a
// private server on this machine, over TCP on loopback, fsync off).
func BenchmarkSweepPostgres(b *testing.B) { benchmarkSweep(b, postgres.NewSchema) }

// benchmarkSweep runs the sweep on the store location returns ("": the
// SQLite file in the state directory).
func benchmarkSweep(b *testing.B, location func(testing.TB) string) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newBenchEnv(b, n, location(b))
			for b.Loop() {
				e.clock.Add(lifetime) // everything is due again
				rotated, err := e.g.Sweep(context.Background())
				if err != nil || rotated != n {
					b.Fatalf("sweep rotated %d (%v), want %d", rotated, err, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func BenchmarkMintOnly(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newBenchEnv(b, 1, "")
			for b.Loop() {
				for i := range n {
					if _, err := e.g.issuer.Mint("sb", uint64(i+1)); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func newBenchEnv(b *testing.B, n int, location string) *env {
	b.Helper()
	e := &env{t: b, dir: shortTempDir(b), store: location, clock: &clock{now: time.Now().Truncate(time.Second)}}
	e.open()
	b.Cleanup(func() { e.g.Close(); e.proc.Close() })
	ctx := context.Background()
	for i := range n {
		sb, err := e.g.store.CreateSandbox(ctx, store.NewSandbox{Name: fmt.Sprintf("sb-%d", i), Driver: "process", Spec: []byte(`{"command":["true"]}`)})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxRunning, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	return e
}
