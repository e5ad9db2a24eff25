package containere2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/gateway"
)

// benchPoll is how often a benchmark looks for the state it waits for.
const benchPoll = time.Millisecond

// benchGrace is the stop grace of the benchmarks' gateways: a delete
// waits it out (2.1 s with the tests' 2 s, ten times a registration), and
// no benchmark times a delete.
const benchGrace = 100 * time.Millisecond

// BenchmarkCreateToRegistered measures, per engine, a sandbox's life from
// the gateway's Create (with start: token minted and written, container
// made and started) until its supervisor's session is registered. The
// sandboxes are deleted together once the count's last one registered,
// not timed: deleting each before the next took most of make bench's time
// here. The few idle sandboxes left running meanwhile cost the engine
// nothing measurable.
func BenchmarkCreateToRegistered(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			h := newHarnessGrace(b, e, longLifetime, benchGrace)
			ctx := context.Background()
			var took []time.Duration
			var made []string
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: fmt.Sprintf("bench-%d", i), Driver: e.name, Start: true,
					Spec: gateway.Spec{Image: testImage, Command: []string{"sleep", "600"}}})
				if err != nil {
					b.Fatal(err)
				}
				made = append(made, sb.ID)
				waitFor(b, registerBound, func() bool { return h.gw.Sessions().Connected(sb.ID) })
				took = append(took, time.Since(start))
			}
			deleteAll(b, h, made)
			reportPercentiles(b, took, "registered")
		})
	}
}

// deleteAll deletes the sandboxes ids at once, each in its own goroutine.
func deleteAll(b *testing.B, h *harness, ids []string) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { errs[i] = h.gw.Delete(context.Background(), id) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRotationToSwap measures, per engine, the latency from a
// rotation (Gateway.Rotate: generation committed, directory written, push
// sent) until the gateway records the generation as delivered, which
// takes the supervisor's acknowledgement, sent once its token source in
// the container holds the new token (from the directory or the push,
// whichever came first).
func BenchmarkRotationToSwap(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			h := newHarnessGrace(b, e, longLifetime, benchGrace)
			sb := h.create("rotating", "sleep", "600")
			ctx := context.Background()
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				gen, err := h.gw.Rotate(ctx, sb.ID)
				if err != nil {
					b.Fatal(err)
				}
				waitFor(b, 10*time.Second, func() bool {
					got, err := h.gw.Get(ctx, sb.ID)
					return err == nil && got.DeliveredGen >= gen
				})
				took = append(took, time.Since(start))
			}
			reportPercentiles(b, took, "swap")
		})
	}
}

// waitFor polls cond every benchPoll until it holds, or fails b.
func waitFor(b *testing.B, bound time.Duration, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("not within %s", bound)
		}
		time.Sleep(benchPoll)
	}
}

// reportPercentiles reports the p50 and p99 of the samples in
// milliseconds, as <what>-p50-ms and <what>-p99-ms.
func reportPercentiles(b *testing.B, samples []time.Duration, what string) {
	if len(samples) == 0 {
		return
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s)-1) + 0.5)
		return float64(s[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), what+"-p50-ms")
	b.ReportMetric(at(0.99), what+"-p99-ms")
}
