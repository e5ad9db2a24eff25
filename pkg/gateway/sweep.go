package gateway

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
)

// runSweep rotates due tokens every SweepInterval until ctx ends.
func (g *Gateway) runSweep(ctx context.Context) {
	t := time.NewTicker(g.cfg.SweepInterval)
	defer t.Stop()
	for {
		if n, err := g.Sweep(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("rotation sweep", zap.Int("rotated", n), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep mints the next generation for every running sandbox whose token
// reached its rotation point, one store transaction per SweepBatch
// sandboxes, pipelined (see mint.go), and retires signing keys no live
// token uses any more. It returns how many sandboxes it rotated.
func (g *Gateway) Sweep(ctx context.Context) (int, error) {
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
