package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/store"
)

// Minting many sandboxes (a sweep, a reconcile after an outage) runs as a
// pipeline of batches of SweepBatch sandboxes, each batch in the order the
// invariants demand (commit, then write, then push):
//
//  1. presign: sign the next generation of each sandbox of a batch, in
//     parallel, outside any transaction, guessing the generation from the
//     newest token the gateway holds;
//  2. commit: one store transaction per batch commits every new
//     generation, taking the presigned token where the guess was right
//     (and the signing key is still the active one), signing otherwise;
//  3. deliver: write the tokens into their directories (in parallel,
//     bounded), record them written, and push them to connected
//     supervisors.
//
// While batch k is committed, batch k+1 is presigned and batch k-1
// delivered: the store's one writer, the signatures and the directory
// writes overlap instead of taking turns. A token leaves the gateway only
// in step 3, after its batch committed.

// minted is one committed batch: the new token of each sandbox.
type minted map[string]*auth.Token

// presigned is a token signed ahead of its commit, and the key that was
// active when it was signed.
type presigned struct {
	tok *auth.Token
	kid string
}

// mint issues the next generation of every sandbox in ids, committed in
// one store transaction, then written into the token directories and
// pushed. It returns the new tokens by sandbox id. A directory write that
// fails is logged and counted; the generation stays committed and the next
// sweep or resume writes a newer one.
func (g *Gateway) mint(ctx context.Context, ids []string, reason string) (map[string]*auth.Token, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	tokens, err := g.commit(ctx, ids, nil, reason)
	if err != nil {
		return nil, err
	}
	g.deliver(ctx, tokens, reason)
	return tokens, nil
}

// mintAll mints ids in batches through the pipeline above and returns how
// many generations it committed. latest, if set, holds each sandbox's
// newest generation as the caller read it from the store; otherwise
// presigning guesses from the tokens the gateway holds.
func (g *Gateway) mintAll(ctx context.Context, ids []string, latest map[string]uint64, reason string) (int, error) {
	var batches [][]string
	for start := 0; start < len(ids); start += g.cfg.SweepBatch {
		batches = append(batches, ids[start:min(start+g.cfg.SweepBatch, len(ids))])
	}
	if len(batches) == 0 {
		return 0, nil
	}
	deliveries := make(chan minted, 1)
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for tokens := range deliveries {
			g.deliver(ctx, tokens, reason)
		}
	}()
	defer func() {
		close(deliveries)
		<-delivered
	}()

	next := g.presignAsync(batches[0], latest)
	total := 0
	for i, batch := range batches {
		signed := <-next
		if i+1 < len(batches) {
			next = g.presignAsync(batches[i+1], latest)
		}
		tokens, err := g.commit(ctx, batch, signed, reason)
		if err != nil {
			if i+1 < len(batches) {
				<-next
			}
			return total, err
		}
		total += len(tokens)
		deliveries <- tokens
	}
	return total, nil
}

// presignAsync signs the guessed next generation of every sandbox of ids
// whose newest generation is known (from latest, or the token the gateway
// holds), on every core, and sends the result once done.
func (g *Gateway) presignAsync(ids []string, latest map[string]uint64) <-chan map[string]presigned {
	out := make(chan map[string]presigned, 1)
	go func() { out <- g.presign(ids, latest) }()
	return out
}

func (g *Gateway) presign(ids []string, latest map[string]uint64) map[string]presigned {
	type job struct {
		id  string
		gen uint64
	}
	var jobs []job
	g.latestMu.RLock()
	for _, id := range ids {
		if gen, ok := latest[id]; ok {
			jobs = append(jobs, job{id, gen + 1})
		} else if tok := g.latest[id]; tok != nil {
			jobs = append(jobs, job{id, tok.Gen() + 1})
		}
	}
	g.latestMu.RUnlock()
	out := make(map[string]presigned, len(jobs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(jobs); i += workers {
				kid := g.keys.Active().KID
				tok, err := g.issuer.Mint(jobs[i].id, jobs[i].gen)
				if err != nil || g.keys.Active().KID != kid {
					continue // commit signs it
				}
				mu.Lock()
				out[jobs[i].id] = presigned{tok, kid}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// commit commits the next generation of every sandbox of ids in one store
// transaction, using signed where it holds that very generation, and
// returns the committed tokens.
func (g *Gateway) commit(ctx context.Context, ids []string, signed map[string]presigned, reason string) (minted, error) {
	tokens := make(minted, len(ids))
	gens, err := g.store.NextGenerations(ctx, ids, func(id string, gen uint64) (store.Minted, error) {
		kid := g.keys.Active().KID
		tok := signed[id].tok
		if tok == nil || tok.Gen() != gen || signed[id].kid != kid {
			var err error
			if tok, err = g.issuer.Mint(id, gen); err != nil {
				return store.Minted{}, err
			}
		}
		tokens[id] = tok
		return store.Minted{
			JTI: tok.JTI(), KID: tok.KID(),
			IssuedAt: tok.IssuedAt(), ExpiresAt: tok.ExpiresAt(),
			RotateAt: RotationPoint(tok.IssuedAt(), g.cfg.Lifetime, g.cfg.Jitter()),
		}, nil
	})
	var missing *store.MissingSandboxesError
	if errors.As(err, &missing) {
		// Deleted while the sweep ran: their tokens died with them.
		g.log.Debug("sandboxes deleted during mint", zap.Strings("sandboxes", missing.IDs))
	} else if err != nil {
		return nil, fmt.Errorf("mint %d generation(s) (%s): %w", len(ids), reason, err)
	}
	committed := make(minted, len(gens))
	for _, gen := range gens {
		committed[gen.SandboxID] = tokens[gen.SandboxID]
	}
	g.metrics.minted.WithLabelValues(reason).Add(float64(len(committed)))
	// Only ever newer: a racing mint of the same sandbox may have
	// committed after this one and cached its token first.
	g.latestMu.Lock()
	for id, tok := range committed {
		if cur := g.latest[id]; cur == nil || cur.Gen() < tok.Gen() {
			g.latest[id] = tok
		}
	}
	g.latestMu.Unlock()
	return committed, nil
}

// deliver writes committed tokens into their directories, records what
// was written, and pushes them to connected supervisors.
func (g *Gateway) deliver(ctx context.Context, tokens minted, reason string) {
	start := g.now()
	toWrite, written := g.splitByDelivery(ctx, tokens)
	for id, gen := range g.writeAll(toWrite) {
		written[id] = gen
	}
	gone, err := g.store.RecordWrittenBatch(ctx, written)
	if err != nil {
		g.log.Warn("record written generations", zap.Error(err))
	}
	// Deleted while their tokens were written: Delete removed each one's
	// directory before the write made it again, or removes it after (its
	// store delete came after this check). Forget what the write and the
	// commit kept of it too.
	for _, id := range gone {
		g.forget(id)
		if err := g.removeTokenDir(id); err != nil {
			g.log.Warn("remove the token directory of a sandbox deleted during its write", zap.String("sandbox", id), zap.Error(err))
		}
	}
	for id, tok := range tokens {
		g.sessions.Push(id)
		g.log.Debug("minted", zap.String("sandbox", id), zap.Uint64("gen", tok.Gen()),
			zap.String("jti", tok.JTI()), zap.String("reason", reason))
	}
	g.metrics.mintDuration.Observe(g.now().Sub(start).Seconds())
}

// mintOne is mint for a single sandbox (a start, a manual rotation),
// failing if its directory write failed: a start must not proceed on a
// directory that lacks the token. It first raises the sandbox's floor past
// a generation its directory holds that the store forgot (floorFromDir).
func (g *Gateway) mintOne(ctx context.Context, id, reason string) (*auth.Token, error) {
	if sb, err := g.store.GetSandbox(ctx, id); err == nil {
		g.floorFromDirLogged(ctx, sb)
	}
	tokens, err := g.mint(ctx, []string{id}, reason)
	if err != nil {
		return nil, err
	}
	tok := tokens[id]
	sb, err := g.store.GetSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	if sb.WrittenGen < tok.Gen() {
		return nil, fmt.Errorf("write token directory %s for gen %d failed (see the log)", g.tokenDir(id), tok.Gen())
	}
	return tok, nil
}

// writeAll writes every token into its sandbox's directory with at most
// WriteParallelism writes in flight, and returns the generations written.
func (g *Gateway) writeAll(tokens minted) map[string]uint64 {
	type job struct {
		id  string
		tok *auth.Token
	}
	jobs := make(chan job)
	var mu sync.Mutex
	written := make(map[string]uint64, len(tokens))
	var wg sync.WaitGroup
	for range min(g.cfg.WriteParallelism, len(tokens)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := g.writeToken(j.id, j.tok); err != nil {
					g.metrics.writeFailures.Inc()
					g.log.Error("write token directory", zap.String("sandbox", j.id),
						zap.Uint64("gen", j.tok.Gen()), zap.String("jti", j.tok.JTI()), zap.Error(err))
					continue
				}
				mu.Lock()
				written[j.id] = j.tok.Gen()
				mu.Unlock()
			}
		}()
	}
	for id, tok := range tokens {
		jobs <- job{id, tok}
	}
	close(jobs)
	wg.Wait()
	return written
}

// openSockets opens the attested socket of every sandbox of ids, with at
// most WriteParallelism in flight. A socket that cannot be opened (a
// stray file where it goes, the open-file limit) cuts that one sandbox off
// its session, not the others: it is logged, naming what to do, and
// counted in the result. Its supervisor keeps its token through the
// directory, and the sandbox's next start tries again.
func (g *Gateway) openSockets(ids []string) (failed int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	jobs := make(chan string)
	for range min(g.cfg.WriteParallelism, len(ids)) {
		wg.Go(func() {
			for id := range jobs {
				if _, err := g.sockets.AddSandbox(g.socketDir(id), id); err != nil {
					g.log.Error("cannot open the sandbox's gateway socket; its supervisor has no session until it is fixed and the gateway or the sandbox restarts",
						zap.String("sandbox", id), zap.Error(err))
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	for _, id := range ids {
		jobs <- id
	}
	close(jobs)
	wg.Wait()
	return failed
}

// latestToken returns the newest token of a sandbox. The store keeps no
// token, only each generation's metadata; the gateway holds the newest
// token of each sandbox in memory (g.latest). After a restart, it takes it
// from the sandbox's token directory on the tmpfs, if the token there is
// the store's newest generation (same gen and jti); otherwise (no
// directory, as with Kubernetes delivery; a tmpfs a reboot emptied; an
// older token) it mints a new generation.
func (g *Gateway) latestToken(ctx context.Context, id string) (*auth.Token, error) {
	if tok := g.cachedToken(id); tok != nil {
		return tok, nil
	}
	gen, err := g.store.LatestGeneration(ctx, id)
	if errors.Is(err, store.ErrNoGeneration) {
		return nil, fmt.Errorf("sandbox %s has no token yet", id)
	}
	if err != nil {
		return nil, err
	}
	// A replica signs the stored generation again: the very token the
	// replica that minted it holds (in replica mode every replica holds
	// every key the store does).
	if g.ReplicaMode() {
		if tok, err := g.resign(gen); err == nil {
			g.cacheToken(tok)
			return tok, nil
		}
	}
	if tok, ok := g.tokenFromDir(id, gen); ok {
		g.cacheToken(tok)
		return tok, nil
	}
	// The token of generation gen is nowhere the gateway may read it: a
	// new generation replaces it (the supervisor that holds gen keeps
	// authenticating with it until then). mint commits, writes and caches.
	tokens, err := g.mint(ctx, []string{id}, "recover")
	if err != nil {
		return nil, err
	}
	tok := tokens[id]
	if tok == nil { // deleted meanwhile
		return nil, fmt.Errorf("latest token of sandbox %s: %w", id, store.ErrNotFound)
	}
	return tok, nil
}

// tokenFromDir returns the token in the sandbox's directory when it is
// the generation gen the store recorded, signed by the gateway's keys for
// that sandbox.
func (g *Gateway) tokenFromDir(id string, gen store.Generation) (*auth.Token, bool) {
	raw, err := tokendir.ReadToken(g.tokenDir(id))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			g.log.Warn("read the token directory for the latest token", zap.String("sandbox", id), zap.Error(err))
		}
		return nil, false
	}
	tok, err := g.verify.VerifyIgnoringExpiry(strings.TrimSpace(string(raw)), id)
	if err != nil {
		g.log.Warn("token directory holds a token that does not verify", zap.String("sandbox", id), zap.Error(err))
		return nil, false
	}
	if tok.Gen() != gen.Gen || tok.JTI() != gen.JTI {
		g.log.Info("token directory holds another generation than the store's newest",
			zap.String("sandbox", id), zap.Uint64("gen", tok.Gen()), zap.String("jti", tok.JTI()),
			zap.Uint64("store_gen", gen.Gen), zap.String("store_jti", gen.JTI))
		return nil, false
	}
	return tok, true
}

// adoptPresented caches a token a supervisor presented, when the gateway
// holds no newer one and the store says it is the sandbox's newest
// generation: after a restart, a supervisor's Hello brings back the token
// the store does not keep.
func (g *Gateway) adoptPresented(ctx context.Context, tok *auth.Token) {
	if cur := g.cachedToken(tok.SandboxID()); cur != nil && cur.Gen() >= tok.Gen() {
		return
	}
	gen, err := g.store.LatestGeneration(ctx, tok.SandboxID())
	if err != nil || gen.Gen != tok.Gen() || gen.JTI != tok.JTI() {
		return
	}
	g.cacheToken(tok)
}

func (g *Gateway) cachedToken(id string) *auth.Token {
	g.latestMu.RLock()
	defer g.latestMu.RUnlock()
	return g.latest[id]
}

// cacheToken makes tok its sandbox's newest token, unless a newer one is
// cached already.
func (g *Gateway) cacheToken(tok *auth.Token) {
	g.latestMu.Lock()
	if cur := g.latest[tok.SandboxID()]; cur == nil || cur.Gen() < tok.Gen() {
		g.latest[tok.SandboxID()] = tok
	}
	g.latestMu.Unlock()
}

// uncacheBelow drops the cached token of a sandbox when it is older than
// gen, or whatever it is when gen is 0 (the sandbox was deleted).
func (g *Gateway) uncacheBelow(id string, gen uint64) {
	g.latestMu.Lock()
	if cur := g.latest[id]; cur != nil && (gen == 0 || cur.Gen() < gen) {
		delete(g.latest, id)
	}
	g.latestMu.Unlock()
}

// uncacheUnless drops every cached token but those of the sandboxes in
// keep.
func (g *Gateway) uncacheUnless(keep map[string]bool) {
	g.latestMu.Lock()
	for id := range g.latest {
		if !keep[id] {
			delete(g.latest, id)
		}
	}
	g.latestMu.Unlock()
}

func (g *Gateway) forget(id string) {
	g.latestMu.Lock()
	delete(g.latest, id)
	g.latestMu.Unlock()
	g.writers.Delete(id)
	g.noDir.m.Delete(id)
}
