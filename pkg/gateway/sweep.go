package gateway

import (
	"context"
	"errors"
	"sync"
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
	ahead, err := g.aheadAfterClockSetBack(ctx, now)
	if err != nil {
		return 0, err
	}
	ids = appendNew(ids, ahead)
	total, err := g.mintAll(ctx, ids, nil, "rotation")
	if err != nil {
		return total, err
	}
	g.clock.checked(now, ahead != nil)
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
	// A last prune ahead of now (the clock was set back since) is due at
	// once: waiting for the clock to reach it again could take days.
	last := g.lastPrune.Load()
	if since := now.UnixNano() - last; (since >= 0 && since < int64(g.cfg.Lifetime/2)) ||
		!g.lastPrune.CompareAndSwap(last, now.UnixNano()) {
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

// clockWatch notices the wall clock going back between sweeps. Tokens
// minted before such a step claim to be issued in the future: verifiers
// refuse them as not yet valid until the clock catches up, and their
// rotation point, as far ahead, would leave them in place all that while.
type clockWatch struct {
	mu sync.Mutex
	// latest is the latest wall time a sweep or reconcile saw, or the time
	// of the last check for tokens issued ahead: no token was issued
	// (much) after it.
	latest time.Time
	// pending: a step back was seen and its tokens not yet replaced.
	pending bool
}

// due reports whether the sweep at now must look for tokens issued ahead
// of the clock: it went back by more than the verifiers' leeway since
// the latest time seen, or a check is still pending.
func (c *clockWatch) due(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.latest.IsZero() && c.latest.Sub(now) > auth.Leeway {
		c.pending = true
	}
	return c.pending
}

// checked records a sweep or reconcile at now that minted what it had to:
// after a check, the newest token was issued at now at the latest.
func (c *clockWatch) checked(now time.Time, didCheck bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now = now.Round(0) // the wall clock, not the monotonic one
	if didCheck || now.After(c.latest) {
		c.latest = now
	}
	if didCheck {
		c.pending = false
	}
}

// aheadAfterClockSetBack returns the running sandboxes whose newest token
// was issued more than the leeway after now, once the clock was seen to
// go back; nil when it was not.
func (g *Gateway) aheadAfterClockSetBack(ctx context.Context, now time.Time) ([]string, error) {
	if !g.clock.due(now) {
		return nil, nil
	}
	return g.issuedAhead(ctx, now)
}

// issuedAhead returns the running sandboxes whose newest token was issued
// more than the leeway after now (never nil).
func (g *Gateway) issuedAhead(ctx context.Context, now time.Time) ([]string, error) {
	ids, err := g.store.IssuedAfter(ctx, now.Add(auth.Leeway))
	if err != nil {
		return nil, err
	}
	if len(ids) > 0 {
		g.log.Warn("the clock was set back: tokens issued ahead of it are not valid yet; replacing them",
			zap.Int("sandboxes", len(ids)), zap.Time("now", now))
	}
	return append([]string{}, ids...), nil
}

// appendNew appends to ids those of more it does not hold.
func appendNew(ids, more []string) []string {
	if len(more) == 0 {
		return ids
	}
	have := make(map[string]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	for _, id := range more {
		if !have[id] {
			have[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}
