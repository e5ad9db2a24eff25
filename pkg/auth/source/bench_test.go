package source

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
)

// propagation measures, per iteration, the time from a completed
// Writer.Write of the next generation to the reader under test returning
// it, and reports the 50th and 99th percentiles in µs. Before each write it
// waits a random fraction of phase, so writes land anywhere in a polling
// reader's cycle, as real rotations do (right after a poll would always be
// the worst case).
func propagation(b *testing.B, f *fixture, phase time.Duration, await func(gen uint64, raw string)) {
	var latencies []time.Duration
	gen := uint64(100)
	for b.Loop() {
		gen++
		raw := f.mint(gen).Raw()
		if phase > 0 {
			time.Sleep(rand.N(phase))
		}
		f.write(raw)
		start := time.Now()
		await(gen, raw)
		latencies = append(latencies, time.Since(start))
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkPropagation measures how soon a directory write reaches
// Source.Current: through fsnotify (poll off), and through polling alone
// (fsnotify off) at a 100 ms interval, where the latency is spread over
// the interval (the real interval on virtio-fs is SharedFSPollInterval).
func BenchmarkPropagation(b *testing.B) {
	const pollEvery = 100 * time.Millisecond
	for _, bc := range []struct {
		name  string
		mod   func(*Config)
		phase time.Duration
	}{
		{"fsnotify", watchOnly, 0},
		{"poll-100ms", pollOnly(pollEvery), pollEvery},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b)
			f.write(f.mint(100).Raw())
			s := f.source(bc.mod, func(c *Config) { c.Logger = zap.NewNop() })
			updates, cancel := s.Subscribe()
			defer cancel()
			propagation(b, f, bc.phase, func(gen uint64, _ string) {
				for genOf(s.Current()) != gen {
					<-updates
				}
			})
		})
	}
}
