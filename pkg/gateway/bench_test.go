package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/store"
)

// BenchmarkSweep rotates every sandbox of a gateway at once: the store
// transaction, the signatures and the token directory writes (the process
// driver starts nothing: sandboxes are marked running in the store only).
// Beside it, BenchmarkMintOnly is the raw signing cost of the same count in
// the same run.
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newBenchEnv(b, n)
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
			e := newBenchEnv(b, 1)
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

func newBenchEnv(b *testing.B, n int) *env {
	b.Helper()
	e := &env{t: b, dir: shortTempDir(b), clock: &clock{now: time.Now().Truncate(time.Second)}}
	e.tokenRoot = memoryTokenRoot(b)
	e.open()
	start := time.Now()
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
	b.Logf("seeded %d sandboxes in %s", n, time.Since(start))
	return e
}

// memoryTokenRoot is a token root on /dev/shm, a tmpfs, as in production
// where the gateway mounts one.
func memoryTokenRoot(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "sk-tokens")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if err := tokendir.RemoveDir(filepath.Join(dir, e.Name())); err != nil {
				b.Error(err)
			}
		}
		os.Remove(dir)
	})
	return dir
}
