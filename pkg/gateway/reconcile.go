package gateway

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/store"
)

// reconcile runs once at start, before any session is served: every
// sandbox the store says is running is checked with its driver. One that
// still runs gets its socket back, and a fresh token if its token expired,
// reached its rotation point, or was never written while the gateway was
// down, or if its directory holds a generation the store does not know (a
// store restored from backup: the floor is raised past it first, so the
// fresh generation was never issued before); one the driver no longer
// knows is marked vanished, one that ended is marked stopped. A token
// directory found empty (a tmpfs after a host reboot), or holding anything
// but the sandbox's newest generation (a token truncated, tampered with,
// another sandbox's, an older one), counts as never written. A sandbox the store does not record as running but whose driver
// runs an instance the store never recorded is adopted first
// (unrecordedStarts).
func (g *Gateway) reconcile(ctx context.Context) error {
	running, err := g.store.ListSandboxes(ctx, store.SandboxRunning)
	if err != nil {
		return err
	}
	unrecorded, err := g.unrecordedStarts(ctx)
	if err != nil {
		return err
	}
	running = append(running, unrecorded...)
	now := g.now()
	var serve, remint []string
	latest := make(map[string]uint64)
	for _, sb := range running {
		d, err := g.driverFor(sb.Driver)
		if err != nil {
			g.log.Error("sandbox uses an unregistered driver; marking it vanished", zap.String("sandbox", sb.ID), zap.Error(err))
			g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxVanished, sb.InstanceID)
			continue
		}
		st, err := d.Status(ctx, sb.ID)
		if err != nil {
			// One sandbox the driver cannot judge (a corrupt record, an
			// engine that does not answer) must not keep the gateway from
			// serving the others. It may well run: it is served as the
			// store says, so its token stays fresh.
			g.log.Error("cannot tell whether the sandbox still runs; serving it as running", zap.String("sandbox", sb.ID),
				zap.String("name", sb.Name), zap.String("driver", sb.Driver), zap.Error(err))
			st.State = driver.StateRunning
		}
		switch st.State {
		case driver.StateMissing:
			g.log.Warn("sandbox vanished while the gateway was down", zap.String("sandbox", sb.ID), zap.String("name", sb.Name))
			if err := g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxVanished, sb.InstanceID); err != nil {
				return err
			}
			continue
		case driver.StateStopped:
			g.log.Info("sandbox ended while the gateway was down", zap.String("sandbox", sb.ID), zap.String("name", sb.Name))
			if err := g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxStopped, sb.InstanceID); err != nil {
				return err
			}
			continue
		}
		serve = append(serve, sb.ID)
		held, err := g.floorFromDir(ctx, sb)
		if err != nil {
			g.log.Warn("read the token directory for generations the store forgot", zap.String("sandbox", sb.ID), zap.Error(err))
		}
		// A replica has no token directory to fill for a sandbox whose
		// driver writes none (Kubernetes): any replica signs its latest
		// generation again from the store, so a new leader re-mints
		// nothing that is still fresh.
		noDir := g.ReplicaMode() && d.TokenDelivery() == driver.DeliveryK8sSA
		if held == dirForgotten || sb.LatestGen == 0 || sb.WrittenGen < sb.LatestGen || !now.Before(sb.RotateAt) || (!noDir && held != dirLatest) {
			remint = append(remint, sb.ID)
			latest[sb.ID] = sb.LatestGen
		}
	}
	// The clock may have been set back while the gateway was down.
	ahead, err := g.issuedAhead(ctx, now)
	if err != nil {
		return err
	}
	remint = appendNew(remint, ahead)
	if _, err := g.mintAll(ctx, remint, latest, "reconcile"); err != nil {
		return err
	}
	g.clock.checked(now, true)
	// Only now, with every token fresh, do the sandboxes' sockets open,
	// WriteParallelism at a time.
	failed := g.openSockets(serve)
	g.fds.check(g.sockets.Len())
	g.log.Info("reconciled sandboxes", zap.Int("running", len(running)), zap.Int("reminted", len(remint)),
		zap.Int("sockets_failed", failed))
	return nil
}

// unrecordedStarts finds the sandboxes whose start the store does not
// record, marks them running with their driver's instance, and returns
// them: the gateway was killed between a driver's start and the store's
// record of it, or the store was restored from a backup taken before the
// start. Left alone, such a sandbox runs without a socket to reach the
// gateway, and no sweep rotates its token, which lapses. Only an
// instance other than the store's counts: the store's own instance,
// still running, has reported its exit and is on its way out. Drivers
// that name their runs (Kubernetes) are left out: a run the store did not
// record is refused by the exchange whatever its state, and reported by
// reportUnknownRuns; so is a replica, whose peers start sandboxes while it
// reconciles.
func (g *Gateway) unrecordedStarts(ctx context.Context) ([]store.Sandbox, error) {
	if g.ReplicaMode() {
		return nil, nil
	}
	idle, err := g.store.ListSandboxes(ctx, store.SandboxCreated, store.SandboxStopped, store.SandboxVanished)
	if err != nil {
		return nil, err
	}
	// Asked WriteParallelism at a time: an engine answers each in a
	// round trip, and a fleet may hold thousands of stopped sandboxes.
	running := make([]string, len(idle)) // the driver's instance, where it runs one
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(g.cfg.WriteParallelism, len(idle)) {
		wg.Go(func() {
			for i := range jobs {
				running[i] = g.unrecordedInstance(ctx, idle[i])
			}
		})
	}
	for i := range idle {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	var out []store.Sandbox
	for i, sb := range idle {
		instance := running[i]
		if instance == "" {
			continue
		}
		g.log.Warn("sandbox runs an instance the store never recorded (gateway killed during its start, or store restored from a backup); reconciling it as running",
			zap.String("sandbox", sb.ID), zap.String("name", sb.Name), zap.String("recorded_state", string(sb.State)),
			zap.String("instance", instance))
		if err := g.store.UpdateSandboxState(ctx, sb.ID, store.SandboxRunning, instance); err != nil {
			return nil, err
		}
		sb.State, sb.InstanceID = store.SandboxRunning, instance
		out = append(out, sb)
	}
	return out, nil
}

// unrecordedInstance returns the instance the driver runs for sb when it
// is not the one the store recorded, or "".
func (g *Gateway) unrecordedInstance(ctx context.Context, sb store.Sandbox) string {
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return ""
	}
	if _, names := d.(driver.RunStarter); names {
		return ""
	}
	st, err := d.Status(ctx, sb.ID)
	if err != nil {
		g.log.Warn("cannot tell whether the sandbox runs; leaving it as the store has it", zap.String("sandbox", sb.ID),
			zap.String("name", sb.Name), zap.String("recorded_state", string(sb.State)), zap.Error(err))
		return ""
	}
	if st.State != driver.StateRunning || st.InstanceID == sb.InstanceID {
		return ""
	}
	return st.InstanceID
}
