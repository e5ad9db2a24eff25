package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
)

// mint issues the next generation of every sandbox in ids, in the order
// the invariants demand: one store transaction commits every new
// generation; only then are the tokens written into the token directories
// (in parallel, bounded) and pushed to connected supervisors. It returns
// the new tokens by sandbox id. A directory write that fails is logged and
// counted; the generation stays committed and the next sweep or resume
// writes a newer one.
func (g *Gateway) mint(ctx context.Context, ids []string, reason string) (map[string]*auth.Token, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	tokens := make(map[string]*auth.Token, len(ids))
	start := g.now()
	gens, err := g.store.NextGenerations(ctx, ids, func(id string, gen uint64) (store.Minted, error) {
		tok, err := g.issuer.Mint(id, gen)
		if err != nil {
			return store.Minted{}, err
		}
		tokens[id] = tok
		return store.Minted{
			JTI: tok.JTI(), KID: tok.KID(), Token: tok.Raw(),
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
	committed := make(map[string]*auth.Token, len(gens))
	for _, gen := range gens {
		committed[gen.SandboxID] = tokens[gen.SandboxID]
	}
	tokens = committed
	g.metrics.minted.WithLabelValues(reason).Add(float64(len(tokens)))
	g.latestMu.Lock()
	for id, tok := range tokens {
		g.latest[id] = tok
	}
	g.latestMu.Unlock()

	written := g.writeAll(tokens)
	if err := g.store.RecordWrittenBatch(ctx, written); err != nil {
		g.log.Warn("record written generations", zap.Error(err))
	}
	for id, tok := range tokens {
		g.sessions.Push(id)
		g.log.Debug("minted", zap.String("sandbox", id), zap.Uint64("gen", tok.Gen()),
			zap.String("jti", tok.JTI()), zap.String("reason", reason))
	}
	g.metrics.mintDuration.Observe(g.now().Sub(start).Seconds())
	return tokens, nil
}

// mintOne is mint for a single sandbox (a start, a manual rotation),
// failing if its directory write failed: a start must not proceed on a
// directory that lacks the token. It first raises the sandbox's floor past
// a generation its directory holds that the store forgot (floorFromDir).
func (g *Gateway) mintOne(ctx context.Context, id, reason string) (*auth.Token, error) {
	if sb, err := g.store.GetSandbox(ctx, id); err == nil {
		if _, err := g.floorFromDir(ctx, sb); err != nil {
			g.log.Warn("read the token directory for generations the store forgot", zap.String("sandbox", id), zap.Error(err))
		}
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
func (g *Gateway) writeAll(tokens map[string]*auth.Token) map[string]uint64 {
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
				if err := g.writeToken(j.id, j.tok.Raw()); err != nil {
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

// latestToken returns the newest token of a sandbox, from the cache or the
// store.
func (g *Gateway) latestToken(ctx context.Context, id string) (*auth.Token, error) {
	g.latestMu.RLock()
	tok := g.latest[id]
	g.latestMu.RUnlock()
	if tok != nil {
		return tok, nil
	}
	gen, err := g.store.LatestGeneration(ctx, id)
	if err != nil {
		return nil, err
	}
	if gen.Token == "" {
		return nil, fmt.Errorf("sandbox %s has no token yet", id)
	}
	tok, err = g.verify.VerifyIgnoringExpiry(gen.Token, id)
	if err != nil {
		return nil, fmt.Errorf("stored token of sandbox %s gen %d: %w", id, gen.Gen, err)
	}
	g.latestMu.Lock()
	if cur := g.latest[id]; cur == nil || cur.Gen() < tok.Gen() {
		g.latest[id] = tok
	}
	g.latestMu.Unlock()
	return tok, nil
}

func (g *Gateway) forget(id string) {
	g.latestMu.Lock()
	delete(g.latest, id)
	g.latestMu.Unlock()
	g.writers.Delete(id)
}
