package gateway

import (
	"context"
	"time"

	"go.uber.org/zap"
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
// sandboxes, and retires signing keys no live token uses any more. It
// returns how many sandboxes it rotated.
func (g *Gateway) Sweep(ctx context.Context) (int, error) {
	now := g.now()
	due, err := g.store.DueForRotation(ctx, now)
	if err != nil {
		return 0, err
	}
	total := 0
	for start := 0; start < len(due); start += g.cfg.SweepBatch {
		batch := due[start:min(start+g.cfg.SweepBatch, len(due))]
		ids := make([]string, len(batch))
		for i, d := range batch {
			ids[i] = d.ID
			if !d.RotateAt.IsZero() {
				g.metrics.rotationLag.Observe(now.Sub(d.RotateAt).Seconds())
			}
		}
		if _, err := g.mint(ctx, ids, "rotation"); err != nil {
			return total, err
		}
		total += len(ids)
	}
	if err := g.retireUnusedKeys(ctx); err != nil {
		return total, err
	}
	return total, nil
}
