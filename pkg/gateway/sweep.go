package gateway

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
)

// runSweep rotates due tokens every SweepInterval until ctx ends.
func (g *Gateway) runSweep(ctx context.Context) {
	t := time.NewTicker(g.cfg.SweepInterval)
	defer t.Stop()
	for {
		n, err := g.Sweep(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, store.ErrFenced) {
			g.fenced(err) // no longer leader: nothing to report as a failure
			return
		}
		g.sweepDone(n, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepDone records a sweep's outcome in readiness and metrics: a failed
// sweep (the store full or read-only, say) means tokens are not rotated,
// so the gateway is not ready until a sweep succeeds again.
func (g *Gateway) sweepDone(rotated int, err error) {
	if err != nil {
		g.metrics.sweepFailures.Inc()
		g.log.Error("rotation sweep", zap.Int("rotated", rotated), zap.Error(err))
	}
	if g.ready.sweepDone(err) {
		if err != nil {
			g.log.Warn("not ready: rotation sweeps fail; tokens are not rotated until one succeeds", zap.Error(err))
		} else {
			g.log.Info("ready again: a rotation sweep succeeded", zap.Int("rotated", rotated))
		}
	}
}

// Sweep activates the next signing key when its publish delay has passed,
// mints the next generation for every running sandbox whose token reached
// its rotation point, one store transaction per SweepBatch sandboxes,
// pipelined (see mint.go), and
// retires signing keys no live token uses any more. It
// returns how many sandboxes it rotated.
func (g *Gateway) Sweep(ctx context.Context) (_ int, err error) {
	defer outwardTo(&err)
	if err := g.activateDueKeys(ctx); err != nil {
		return 0, err
	}
	now := g.now()
	due, err := g.store.DueForRotation(ctx, now)
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = d.ID
		if !d.RotateAt.IsZero() {
			g.metrics.rotationLag.Observe(now.Sub(d.RotateAt).Seconds())
		}
	}
	total, err := g.mintAll(ctx, ids, nil, "rotation")
	if err != nil {
		return total, err
	}
	if err := g.retireUnusedKeys(ctx); err != nil {
		return total, err
	}
	g.pruneGenerations(ctx, now)
	return total, nil
}

// pruneGenerations deletes, every half lifetime, the records of
// generations that can no longer authenticate (expired past the leeway and
// not among their sandbox's two newest): without it the store grows by one
// row per sandbox per rotation, for ever.
func (g *Gateway) pruneGenerations(ctx context.Context, now time.Time) {
	last := g.lastPrune.Load()
	if now.UnixNano()-last < int64(g.cfg.Lifetime/2) || !g.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	n, err := g.store.PruneGenerations(ctx, now.Add(-auth.Leeway))
	if err != nil {
		g.log.Warn("prune old generations", zap.Error(err))
		return
	}
	g.metrics.pruned.Add(float64(n))
	if n > 0 {
		g.log.Debug("pruned old generations", zap.Int64("rows", n))
	}
}
