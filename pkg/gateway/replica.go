package gateway

// Gateway replicas: several gateways sharing one Postgres store, each
// serving the supervisor sessions that reach it, with one leader at a time
// doing the store-wide work. See REPLICAS.md's "Gateway" section and
// docs/architecture.md.
//
//   - The leader lease ("leader" in the store, Config.LeaderLease, renewed
//     every third of it; Postgres only) elects the one gateway that reconciles (replica
//     mode, on gaining the lease), sweeps, prunes and activates keys; every
//     store write it makes as leader carries store.WithFence, so once the
//     lease passed to another gateway it commits nothing. A leader that
//     cannot renew before its local deadline (its last successful renewal
//     call's start plus the lease) stops leader work at once. A single
//     gateway on Postgres runs the same loop, alone; on SQLite it leads
//     without a lease.
//   - Fan-out: store.Listen tells every replica of each generation any of
//     them committed; a replica holding that sandbox's session re-signs it
//     from the stored claims (auth.Issuer.Resign: the same bytes as the
//     minter's) and pushes it. Resync (after the listener (re)connects)
//     does the same for every local session; KeysChanged reloads the key
//     set and the JWKS.
//   - Session holders: each replica records in the store the sessions it
//     holds, so any of them answers "who holds sandbox X"
//     (SessionHolder).
//   - The replica registry: each gateway on Postgres registers itself
//     (single or replica mode) and heartbeats its row with the lease
//     renewal; the store refuses mixed modes and disagreeing settings.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
)

// Holder names the gateway replica that holds a sandbox's session, so
// that the operator API can forward a call for that session to it.
type Holder struct {
	// ReplicaID is the holding replica's id; this gateway's own id when
	// the session is here or nowhere.
	ReplicaID string
	// AdminAddr is the holding replica's operator API (TLS), as it
	// advertises it; empty when Local.
	AdminAddr string
	// Local is true when this gateway holds the session, or when no
	// replica does (the call is then answered here, as "not connected").
	Local bool
	// Connected is true when a live session exists on some replica.
	Connected bool
}

// SessionHolder says which replica holds the session of a sandbox. A
// single gateway holds every session itself; a replica asks the store
// about sessions it does not hold.
func (g *Gateway) SessionHolder(ctx context.Context, sandboxID string) (_ Holder, err error) {
	defer outwardTo(&err)
	local := Holder{ReplicaID: g.replicaID, Local: true, Connected: g.sessions.Connected(sandboxID)}
	if local.Connected || !g.ReplicaMode() {
		return local, nil
	}
	r, ok, err := g.store.SessionHolder(ctx, sandboxID)
	if err != nil {
		return Holder{}, err
	}
	if !ok || r.ID == g.replicaID {
		return local, nil
	}
	return Holder{ReplicaID: r.ID, AdminAddr: r.AdminAddr, Connected: true}, nil
}

// SessionHolders is SessionHolder for many sandboxes at once (one store
// query, for listings): the holder of each of ids whose session some
// replica holds. Sandboxes absent from the map have no session anywhere.
func (g *Gateway) SessionHolders(ctx context.Context, ids []string) (_ map[string]Holder, err error) {
	defer outwardTo(&err)
	var held map[string]store.Replica
	if g.ReplicaMode() {
		if held, err = g.store.SessionHolders(ctx); err != nil {
			return nil, err
		}
	}
	out := make(map[string]Holder)
	for _, id := range ids {
		if g.sessions.Connected(id) {
			out[id] = Holder{ReplicaID: g.replicaID, Local: true, Connected: true}
		} else if r, ok := held[id]; ok && r.ID != g.replicaID {
			out[id] = Holder{ReplicaID: r.ID, AdminAddr: r.AdminAddr, Connected: true}
		}
	}
	return out, nil
}

// ReplicaID is this gateway process's id among the replicas sharing its
// store: random, new at every start.
func (g *Gateway) ReplicaID() string { return g.replicaID }

// ReplicaMode reports whether the gateway runs as one of several replicas
// (Config.ReplicaAdvertise is set).
func (g *Gateway) ReplicaMode() bool { return g.cfg.ReplicaAdvertise != "" }

// Leader reports whether this gateway holds the leader lease now, and its
// epoch. A gateway on SQLite leads, at epoch 0, while Serve runs.
func (g *Gateway) Leader() (bool, uint64) {
	if g.solo.Load() {
		return true, 0
	}
	g.leaderMu.Lock()
	defer g.leaderMu.Unlock()
	if g.term == nil || g.term.ended() {
		return false, 0
	}
	return true, g.term.epoch
}

// leaderLease is the name of the leader lease in the store.
const leaderLease = "leader"

// registered reports whether the gateway keeps a row in the store's
// replica registry: on Postgres only (an SQLite store has one gateway,
// which the state directory's lock already guarantees).
func (g *Gateway) registered() bool { return g.store.Dialect() == "postgres" }

// register records this gateway in the replica registry, refused by the
// store when it may not run beside a live gateway already there.
func (g *Gateway) register(ctx context.Context) error {
	if !g.registered() {
		return nil
	}
	mode := store.ModeSingle
	if g.ReplicaMode() {
		mode = store.ModeReplica
	}
	err := g.store.RegisterReplica(ctx, store.Replica{
		ID: g.replicaID, AdminAddr: g.cfg.ReplicaAdvertise, Mode: mode, Origin: g.origin(),
		Settings: store.ClusterSettings{Issuer: g.cfg.Issuer, Audience: g.cfg.Audience,
			TrustDomain: g.cfg.TrustDomain, TokenLifetime: g.cfg.Lifetime},
	}, g.cfg.LeaderLease)
	if err != nil {
		return err
	}
	g.log.Info("registered in the store's replica registry", zap.String("replica", g.replicaID),
		zap.String("mode", mode), zap.String("advertise", g.cfg.ReplicaAdvertise))
	return nil
}

// origin names where this gateway runs, host and state directory (and
// the advertised address, which tells apart replicas whose containers
// share a host name and a path): one gateway at a time holds it
// (LockStateDir), so a live registration of the same origin is a
// predecessor that crashed.
func (g *Gateway) origin() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	dir, err := filepath.Abs(g.cfg.StateDir)
	if err != nil {
		dir = g.cfg.StateDir
	}
	return host + ":" + dir + " " + g.cfg.ReplicaAdvertise
}

// heartbeat keeps the registration live, registering again when an
// operator (or a long outage's cleanup) removed it.
func (g *Gateway) heartbeat(ctx context.Context) error {
	if !g.registered() {
		return nil
	}
	err := g.store.HeartbeatReplica(ctx, g.replicaID, g.cfg.LeaderLease)
	if errors.Is(err, store.ErrNotFound) {
		return g.register(ctx)
	}
	return err
}

// leaseTakeoverMargin is how long after a holder's lease runs out a
// standby asks for it: enough for the database's clock to have passed it.
const leaseTakeoverMargin = 20 * time.Millisecond

// leaderTerm is one tenure of the leader lease at one epoch.
type leaderTerm struct {
	epoch  uint64
	cancel context.CancelFunc
	ctx    context.Context
	// deadline stops the term when the lease is not renewed in time.
	deadline *time.Timer
	done     chan struct{}
}

func (t *leaderTerm) ended() bool {
	select {
	case <-t.done:
		return true
	default:
		return t.ctx.Err() != nil
	}
}

// runLeader keeps trying for the leader lease, renewing it every third of
// its length, heartbeats the replica registration, and runs leader work
// for as long as it holds the lease, until ctx ends; it then gives the
// lease up so a successor need not wait for it to expire.
//
// On SQLite the gateway is alone by construction (the state directory's
// lock, a local file): it leads from start to end, with no lease to renew
// and no fence.
func (g *Gateway) runLeader(ctx context.Context) {
	if !g.registered() {
		g.solo.Store(true)
		g.metrics.leader.Set(1)
		g.metrics.storeUp.Set(1)
		defer func() {
			g.solo.Store(false)
			g.metrics.leader.Set(0)
		}()
		g.leaderWork(ctx)
		return
	}
	lease := g.cfg.LeaderLease
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Work stops first: the successor must not meet it.
			g.stepDown("gateway stopping")
			g.releaseLease()
			return
		case <-t.C:
		case <-g.leaderPoke:
		}
		// Each try is bounded by the renewal interval: a store that hangs
		// must not hold the loop past the term's deadline.
		start := time.Now()
		tctx, cancel := context.WithTimeout(ctx, lease/3)
		l, ok, err := g.store.AcquireLease(tctx, leaderLease, g.replicaID, lease)
		hbErr := g.heartbeat(tctx)
		cancel()
		if ctx.Err() != nil {
			continue
		}
		g.storeDone(errors.Join(err, hbErr))
		switch {
		case err != nil:
			// The term's deadline stops leader work if no renewal succeeds
			// in time.
			g.log.Warn("renew the leader lease", zap.Error(err))
		case !ok:
			g.stepDown("another gateway holds the leader lease")
			// Try again the moment the holder's lease runs out, by the
			// database's clock: a killed leader is replaced within the
			// lease of its last renewal, not a renewal interval later.
			if l.Left < lease/3 {
				t.Reset(l.Left + leaseTakeoverMargin)
				continue
			}
		default:
			g.holdLease(ctx, l, start.Add(lease))
		}
		t.Reset(lease / 3)
	}
}

// holdLease extends the current term to deadline, or starts a new one when
// there is none (or it ended, or l is a new epoch).
func (g *Gateway) holdLease(ctx context.Context, l store.Lease, deadline time.Time) {
	g.leaderMu.Lock()
	term := g.term
	g.leaderMu.Unlock()
	if term != nil && term.epoch == l.Epoch && !term.ended() {
		term.deadline.Reset(time.Until(deadline))
		return
	}
	if term != nil {
		g.stepDown("the term ended, or the lease was taken again at a new epoch")
	}
	tctx, cancel := context.WithCancel(ctx)
	term = &leaderTerm{epoch: l.Epoch, ctx: tctx, cancel: cancel, done: make(chan struct{})}
	term.deadline = time.AfterFunc(time.Until(deadline), func() {
		g.log.Error("the leader lease was not renewed before its deadline: leader work stops at once",
			zap.Uint64("epoch", l.Epoch))
		cancel()
		g.metrics.leader.Set(0)
	})
	g.leaderMu.Lock()
	g.term = term
	g.leaderMu.Unlock()
	g.metrics.leader.Set(1)
	g.metrics.leaderEpoch.Set(float64(l.Epoch))
	g.metrics.leaderChanges.Inc()
	g.log.Info("gained the leader lease", zap.Uint64("epoch", l.Epoch), zap.Time("expires", l.Expires))
	go func() {
		defer close(term.done)
		g.leaderWork(store.WithFence(tctx, leaderLease, g.replicaID, l.Epoch))
	}()
}

// stepDown ends the current term, if any, and waits for its work to stop.
func (g *Gateway) stepDown(why string) {
	g.leaderMu.Lock()
	term := g.term
	g.term = nil
	g.leaderMu.Unlock()
	if term == nil {
		return
	}
	term.deadline.Stop()
	term.cancel()
	<-term.done
	// A failed sweep made it not ready; it sweeps no more, so only the
	// store's own failure (the heartbeat's) may keep it so.
	g.ready.sweepDone(nil)
	g.metrics.leader.Set(0)
	g.metrics.leaderChanges.Inc()
	g.log.Info("stopped leader work", zap.Uint64("epoch", term.epoch), zap.String("why", why))
}

// releaseLease gives the lease up (the gateway is stopping), bounded: a
// store that does not answer lets the lease expire instead.
func (g *Gateway) releaseLease() {
	if g.abandonOnStop {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.store.ReleaseLease(ctx, leaderLease, g.replicaID); err != nil {
		g.log.Warn("release the leader lease: the next leader waits for it to expire", zap.Error(err))
	}
}

// pokeLeader makes runLeader try the lease now rather than at its next
// renewal (leader work stopped on a fenced write).
func (g *Gateway) pokeLeader() {
	select {
	case g.leaderPoke <- struct{}{}:
	default:
	}
}

// leaderWork is what the leader does, under the fence of its term, until
// the term ends: reconcile (replica mode: a single gateway reconciled in
// Open) and then the sweep. A write refused by the fence ends it.
func (g *Gateway) leaderWork(ctx context.Context) {
	if g.ReplicaMode() {
		if err := g.reconcile(ctx); err != nil {
			if errors.Is(err, store.ErrFenced) {
				g.fenced(err)
				return
			}
			// The sweep mints what is due anyway; what is left (a socket
			// that would not open) waits for the next leader's try.
			g.log.Error("reconcile sandboxes on gaining the leader lease", zap.Error(err))
		}
	}
	g.runSweep(ctx)
}

// fenced reacts to a write the fence refused: this gateway lost the lease.
func (g *Gateway) fenced(err error) {
	g.log.Warn("a leader write was fenced off: another gateway holds the lease", zap.Error(err))
	g.pokeLeader()
}

// storeDone records whether the store answered the lease and heartbeat.
func (g *Gateway) storeDone(err error) {
	up := 1.0
	if err != nil {
		up = 0
	}
	g.metrics.storeUp.Set(up)
	if g.ready.storeDone(err) {
		if err != nil {
			g.log.Warn("not ready: the store fails", zap.Error(err))
		} else {
			g.log.Info("ready again: the store answers")
		}
	}
}

// fanout re-signs and pushes generations other replicas committed to the
// sessions held here. Events arrive on Listen's goroutine and are queued;
// run works through the queue.
type fanout struct {
	g       *Gateway
	mu      sync.Mutex
	pending map[string]time.Time // sandbox id -> when first heard
	wake    chan struct{}
}

func newFanout(g *Gateway) *fanout {
	return &fanout{g: g, pending: make(map[string]time.Time), wake: make(chan struct{}, 1)}
}

var _ store.Events = (*fanout)(nil)

// Generation implements store.Events.
func (f *fanout) Generation(sandboxID string, gen uint64) {
	g := f.g
	if !g.sessions.Connected(sandboxID) {
		// Not held here. A token this replica cached (minting it as
		// leader, or re-signing it for a session since moved) is no longer
		// the newest: drop it, so that a session the sandbox opens here
		// later is given the store's newest at its Hello, not this one.
		g.uncacheBelow(sandboxID, gen)
		return
	}
	// Generation 0: deleted; deliver finds it gone and ends the session.
	if tok := g.cachedToken(sandboxID); gen > 0 && tok != nil && tok.Gen() >= gen {
		g.metrics.fanout.WithLabelValues(fanoutCurrent).Inc()
		return
	}
	f.enqueue(sandboxID)
}

// KeysChanged implements store.Events. It runs on Listen's goroutine, so
// the keys are loaded before any later generation is re-signed with them.
func (f *fanout) KeysChanged() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.g.reloadKeys(ctx); err != nil {
		f.g.log.Error("reload the signing keys another replica changed", zap.Error(err))
	}
}

// Resync implements store.Events: whatever was committed while nobody
// listened, every local session is brought up to the store's newest.
func (f *fanout) Resync() {
	f.KeysChanged()
	// What was missed may have made any token cached here stale: keep
	// only those of the sessions held here, which deliver checks now.
	local := f.g.sessions.SandboxIDs()
	held := make(map[string]bool, len(local))
	for _, id := range local {
		held[id] = true
	}
	f.g.uncacheUnless(held)
	for _, id := range local {
		f.enqueue(id)
	}
}

func (f *fanout) enqueue(id string) {
	f.mu.Lock()
	if _, ok := f.pending[id]; !ok {
		f.pending[id] = time.Now()
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run delivers queued generations until ctx ends, WriteParallelism at a
// time.
func (f *fanout) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		f.mu.Lock()
		batch := f.pending
		f.pending = make(map[string]time.Time)
		f.mu.Unlock()
		jobs := make(chan string)
		var wg sync.WaitGroup
		for range min(f.g.cfg.WriteParallelism, len(batch)) {
			wg.Go(func() {
				for id := range jobs {
					f.deliver(ctx, id, batch[id])
				}
			})
		}
		for id := range batch {
			jobs <- id
		}
		close(jobs)
		wg.Wait()
	}
}

// deliver brings the local session of id up to the store's newest
// generation: re-signed from its stored claims, cached, pushed.
func (f *fanout) deliver(ctx context.Context, id string, heard time.Time) {
	g := f.g
	if !g.sessions.Connected(id) {
		return
	}
	gen, err := g.store.LatestGeneration(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		// Deleted through another replica: its tokens are revoked; end
		// its session here, as the deleting replica would have.
		g.forget(id)
		g.sessions.EndDeleted(id)
		g.log.Info("sandbox deleted through another replica: session ended", zap.String("sandbox", id))
		return
	}
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrNoGeneration) {
			g.metrics.fanout.WithLabelValues(fanoutFailed).Inc()
			g.log.Warn("fan out a generation: read it", zap.String("sandbox", id), zap.Error(err))
		}
		return
	}
	if tok := g.cachedToken(id); tok != nil && tok.Gen() >= gen.Gen {
		g.metrics.fanout.WithLabelValues(fanoutCurrent).Inc()
		return
	}
	tok, err := g.resign(gen)
	if err != nil {
		g.metrics.fanout.WithLabelValues(fanoutFailed).Inc()
		g.log.Error("fan out a generation: re-sign it", zap.String("sandbox", id), zap.Uint64("gen", gen.Gen), zap.Error(err))
		return
	}
	g.cacheToken(tok)
	g.sessions.Push(id)
	g.metrics.fanout.WithLabelValues(fanoutPushed).Inc()
	g.metrics.fanoutSeconds.Observe(time.Since(heard).Seconds())
	g.log.Debug("fanned out", zap.String("sandbox", id), zap.Uint64("gen", gen.Gen), zap.String("jti", gen.JTI))
}

// resign signs a stored generation again: the same token its minter made.
func (g *Gateway) resign(gen store.Generation) (*auth.Token, error) {
	return g.issuer.Resign(auth.StoredClaims{SandboxID: gen.SandboxID, Gen: gen.Gen, JTI: gen.JTI, KID: gen.KID,
		IssuedAt: gen.IssuedAt, ExpiresAt: gen.ExpiresAt})
}

// holders records in the store which sessions this replica holds. Session
// events only mark a sandbox dirty; a flush writes what is true then
// (connected here or not), in two batched statements, so events that
// race each other cannot leave a wrong row behind.
type holders struct {
	g     *Gateway
	mu    sync.Mutex
	dirty map[string]bool
	wake  chan struct{}
}

func newHolders(g *Gateway) *holders {
	return &holders{g: g, dirty: make(map[string]bool), wake: make(chan struct{}, 1)}
}

func (h *holders) changed(sandboxID string) {
	h.mu.Lock()
	h.dirty[sandboxID] = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// holdersFlushDelay gathers the session events of a burst (a replica's
// sessions reconnecting) into one batch.
const holdersFlushDelay = 50 * time.Millisecond

// run flushes until ctx ends; a failed flush is retried with the next.
func (h *holders) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(holdersFlushDelay):
		}
		h.mu.Lock()
		batch := h.dirty
		h.dirty = make(map[string]bool)
		h.mu.Unlock()
		var held, gone []string
		for id := range batch {
			if h.g.sessions.Connected(id) {
				held = append(held, id)
			} else {
				gone = append(gone, id)
			}
		}
		err := errors.Join(h.g.store.SetSessionHolders(ctx, h.g.replicaID, held),
			h.g.store.ClearSessionHolders(ctx, h.g.replicaID, gone))
		if err != nil && ctx.Err() == nil {
			h.g.log.Warn("record the sessions held here; retrying", zap.Error(err))
			for id := range batch {
				h.changed(id)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// reloadKeys makes the key set what the store holds, after another
// replica changed it, and republishes the JWKS.
func (g *Gateway) reloadKeys(ctx context.Context) error {
	// Read under the lock that this replica's own key changes hold: a
	// snapshot read before a local activation and applied after it would
	// put the old active key back.
	g.keyState.mu.Lock()
	defer g.keyState.mu.Unlock()
	stored, err := g.store.ListKeys(ctx)
	if err != nil {
		return err
	}
	var active *auth.SigningKey
	var others []*auth.SigningKey
	next, nextAt := "", time.Time{}
	for _, k := range stored {
		if k.State == store.KeyRetired {
			continue
		}
		sk, err := auth.KeyFromSeed(k.Seed, k.CreatedAt)
		if err != nil {
			return err
		}
		switch k.State {
		case store.KeyActive:
			active = sk
		case store.KeyNext:
			next, nextAt = k.KID, k.ActivateAt
			others = append(others, sk)
		default:
			others = append(others, sk)
		}
	}
	if active == nil {
		return errors.New("reload signing keys: the store has no active key")
	}
	g.keys.Replace(active, others...)
	g.keyState.next, g.keyState.nextAt = next, nextAt
	return g.publishJWKS()
}
