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
	defer func() {
		if err := e.destroy(); err != nil {
			b.Error(err)
		}
	}()
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
//
// Two things make a rotation's push line fail to appear, neither a lost
// token, and the benchmark allows for both:
//   - the supervisor logs JSON through zap's production sampling, which
//     keeps the first 100 lines of a message each second and then one in
//     100: rotations are paced at most rotationsPerSecond, below it;
//   - the guest also polls its share every second, and a poll that lands
//     between the directory write and the push takes the token first (the
//     push is then acknowledged without a line of its own): that rotation
//     gives no push sample, and counts in dir-first/op.
func BenchmarkVMRotationToSwapThroughSession(b *testing.B) {
	e, id := bootForBench(b)
	c := e.console(id)
	var samples []time.Duration
	dirFirst := 0
	var last time.Time
	for b.Loop() {
		b.StopTimer()
		time.Sleep(time.Until(last.Add(time.Second / rotationsPerSecond)))
		b.StartTimer()
		mark := c.mark()
		start := time.Now()
		last = start
		gen, err := e.gw.Rotate(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		line := c.waitFor(b, mark, 30*time.Second, "the new token", tokenAccepted("", gen))
		if line.Origin != session.OriginSessionPush {
			dirFirst++
			continue
		}
		samples = append(samples, line.Seen.Sub(start))
	}
	reportPercentiles(b, samples)
	b.ReportMetric(float64(dirFirst)/float64(b.N), "dir-first/op")
}

// rotationsPerSecond keeps a benchmark's "token accepted" lines under the
// 100 a second that the supervisor's logger keeps of one message.
const rotationsPerSecond = 80

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

// benchVM is the VM the rotation benchmarks share, booted by the first
// of them and destroyed by TestMain: each run of a benchmark (-count)
// booting its own under TCG took longer than its measurement.
var benchVM struct {
	e  *env
	id string
}

// bootForBench returns the benchmarks' VM, registered; the boot is not
// measured.
func bootForBench(b *testing.B) (*env, string) {
	b.Helper()
	if benchVM.e == nil {
		e := newEnv(b, benchLifetime)
		sb := e.create("bench", "sleep", "100000")
		benchVM.e, benchVM.id = e, sb.ID
	} else {
		benchVM.e.use(b)
	}
	// A benchmark that blocked the session restored it: the guest dials
	// again within its backoff.
	eventually(b, gapBound, "registered", func() bool { return benchVM.e.gw.Sessions().Connected(benchVM.id) })
	return benchVM.e, benchVM.id
}

func closeBenchVM() error {
	var err error
	if benchVM.e != nil {
		err = benchVM.e.destroy()
		benchVM.e = nil
	}
	return err
}
