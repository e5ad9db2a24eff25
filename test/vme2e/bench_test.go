package vme2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/session"
)

// benchLifetime keeps the sweep from rotating on its own during the
// rotation benchmarks: every rotation measured is the benchmark's.
const benchLifetime = time.Hour

// reportPercentiles reports the p50 and p99 of samples, in milliseconds.
func reportPercentiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		i := int(q*float64(len(samples)) + 0.5)
		return float64(samples[min(max(i-1, 0), len(samples)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// BenchmarkVMBootToRegistered measures, under TCG, the time from the
// gateway's Start of a VM sandbox to its supervisor's registration: the
// token minted and written, initrd assembled, virtiofsd and QEMU started,
// the kernel booted, the supervisor's init duties, the first session.
func BenchmarkVMBootToRegistered(b *testing.B) {
	e := newEnv(b, benchLifetime)
	defer e.destroy()
	ctx := context.Background()
	var samples []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		sb, err := e.gw.Create(ctx, gateway.CreateRequest{Name: fmt.Sprintf("boot-%d", i), Spec: gateway.Spec{Command: []string{"sleep", "100000"}}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := e.gw.Start(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		eventually(b, bootBound, "registered", func() bool { return e.gw.Sessions().Connected(sb.ID) })
		samples = append(samples, time.Since(start))
		b.StopTimer()
		if err := e.gw.Delete(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, samples)
}

// BenchmarkVMRotationToSwapThroughSession measures the time from a
// rotation to the guest's supervisor holding the new token, pushed over
// the session (the host sees the guest's log line on its console).
func BenchmarkVMRotationToSwapThroughSession(b *testing.B) {
	e, id := bootForBench(b)
	c := e.console(id)
	var samples []time.Duration
	for b.Loop() {
		mark := c.mark()
		start := time.Now()
		gen, err := e.gw.Rotate(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		line := c.waitFor(b, mark, 30*time.Second, "the pushed token", tokenAccepted(session.OriginSessionPush, gen))
		samples = append(samples, line.Seen.Sub(start))
	}
	reportPercentiles(b, samples)
}

// BenchmarkVMRotationToSwapByPolling measures the same with the session
// blocked: the guest finds the new token by polling its read-only share
// (every second), so the median is about half the poll interval.
func BenchmarkVMRotationToSwapByPolling(b *testing.B) {
	e, id := bootForBench(b)
	c := e.console(id)
	restore := blockSession(b, e, id)
	defer restore()
	var samples []time.Duration
	for b.Loop() {
		// Rotating right after the guest's last poll took the previous
		// token would measure a whole interval every time: rotate at a
		// random point of the interval instead.
		b.StopTimer()
		time.Sleep(rand.N(pollInterval))
		b.StartTimer()
		mark := c.mark()
		start := time.Now()
		gen, err := e.gw.Rotate(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		line := c.waitFor(b, mark, 30*time.Second, "the polled token", tokenAccepted(source.OriginDir, gen))
		samples = append(samples, line.Seen.Sub(start))
	}
	reportPercentiles(b, samples)
}

// bootForBench boots one VM for a benchmark and waits until it is
// registered; the boot is not measured.
func bootForBench(b *testing.B) (*env, string) {
	b.Helper()
	e := newEnv(b, benchLifetime)
	b.Cleanup(e.destroy)
	sb := e.create("bench", "sleep", "100000")
	eventually(b, bootBound, "registered", func() bool { return e.gw.Sessions().Connected(sb.ID) })
	return e, sb.ID
}
