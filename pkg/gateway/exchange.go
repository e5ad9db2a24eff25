package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store"
)

// The Gateway exchanges backend credentials for sandbox tokens.
var _ session.Exchanger = (*Gateway)(nil)

// Exchange implements session.Exchanger (DESIGN.md §8.1). The sandbox must
// be known and on a driver that verifies credentials; the driver checks
// the credential with its backend (for Kubernetes: TokenReview, then the
// live pod) and names the run it is bound to; the sandbox must then be
// running, and that run the one recorded at its start. The answer is the
// sandbox's latest token, or a new generation when the latest is due for
// rotation: an exchange never mints more often than the sweep would.
func (g *Gateway) Exchange(ctx context.Context, sandboxID, credential string) (*auth.Token, error) {
	sb, err := g.store.GetSandbox(ctx, sandboxID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, session.RefuseExchange(session.ExchangeUnknownSandbox, "sandbox %q", sandboxID)
	}
	if err != nil {
		return nil, err
	}
	d, err := g.driverFor(sb.Driver)
	if err != nil {
		return nil, session.RefuseExchange(session.ExchangeNotSupported, "sandbox %s: %v", sb.ID, err)
	}
	verifier, ok := d.(driver.CredentialVerifier)
	if !ok {
		return nil, session.RefuseExchange(session.ExchangeNotSupported, "sandbox %s runs on driver %s, which has no credential to exchange", sb.ID, sb.Driver)
	}
	run, err := verifier.VerifyCredential(ctx, sb.ID, credential)
	if err != nil {
		return nil, err
	}
	// Re-read: a restart may have recorded a new run while the backend answered.
	if sb, err = g.store.GetSandbox(ctx, sandboxID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, session.RefuseExchange(session.ExchangeUnknownSandbox, "sandbox %q", sandboxID)
		}
		return nil, err
	}
	if sb.State != store.SandboxRunning {
		return nil, session.RefuseExchange(session.ExchangeNotRunning, "sandbox %s is %s", sb.ID, sb.State)
	}
	if sb.RunID == "" || run != sb.RunID {
		return nil, session.RefuseExchange(session.ExchangeNotCurrentRun,
			"credential bound to run %s; sandbox %s's current run is %q", run, sb.ID, sb.RunID)
	}
	if sb.LatestGen > 0 && g.now().Before(sb.RotateAt) {
		if tok, err := g.latestToken(ctx, sb.ID); err == nil && g.now().Before(tok.ExpiresAt()) {
			return tok, nil
		}
	}
	return g.mintOne(ctx, sb.ID, "exchange")
}

// noDirectory caches, by sandbox id, whether its driver delivers tokens
// without a token directory (DeliveryK8sSA): such sandboxes get their
// tokens from the exchange and the session only.
type noDirectory struct{ m sync.Map }

// skipsDirectory reports whether sandbox id's tokens are written nowhere.
// Its driver never changes, so the answer is cached until forget.
func (g *Gateway) skipsDirectory(ctx context.Context, id string) bool {
	if v, ok := g.noDir.m.Load(id); ok {
		return v.(bool)
	}
	sb, err := g.store.GetSandbox(ctx, id)
	if err != nil {
		return false // write: a directory too many harms nobody
	}
	d, err := g.driverFor(sb.Driver)
	skip := err == nil && d.TokenDelivery() == driver.DeliveryK8sSA
	g.noDir.m.Store(id, skip)
	return skip
}

// splitByDelivery separates the tokens that go into token directories
// from those of sandboxes without one, which count as written at once:
// their channel (exchange and session) has nothing to write.
func (g *Gateway) splitByDelivery(ctx context.Context, tokens minted) (toWrite minted, written map[string]uint64) {
	written = make(map[string]uint64)
	if !g.anyNoDir {
		return tokens, written
	}
	toWrite = make(minted, len(tokens))
	for id, tok := range tokens {
		if g.skipsDirectory(ctx, id) {
			written[id] = tok.Gen()
			continue
		}
		toWrite[id] = tok
	}
	return toWrite, written
}

// hasNoDirDriver reports whether any driver delivers tokens without a directory.
func hasNoDirDriver(ds map[string]driver.Driver) bool {
	for _, d := range ds {
		if d.TokenDelivery() == driver.DeliveryK8sSA {
			return true
		}
	}
	return false
}

// reportUnknownRuns logs, at start, every run a driver finds on its
// backend that the store does not know as a sandbox's current run: a pod
// made by hand, or left by a deleted sandbox or a lost store. They are
// reported, not removed: the operator decides.
func (g *Gateway) reportUnknownRuns(ctx context.Context) error {
	for name, d := range g.cfg.Drivers {
		lister, ok := d.(driver.RunLister)
		if !ok {
			continue
		}
		runs, err := lister.ListRuns(ctx)
		if err != nil {
			return fmt.Errorf("driver %s: list runs: %w", name, err)
		}
		for _, r := range runs {
			sb, err := g.store.GetSandbox(ctx, r.SandboxID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				g.log.Warn("a run of no known sandbox; remove it if nobody needs it", zap.String("driver", name),
					zap.String("run", r.Name), zap.String("run_id", r.RunID), zap.String("sandbox", r.SandboxID))
			case err != nil:
				return err
			case sb.RunID != r.RunID:
				g.log.Warn("a run that is not its sandbox's current run", zap.String("driver", name),
					zap.String("run", r.Name), zap.String("run_id", r.RunID), zap.String("sandbox", r.SandboxID),
					zap.String("current_run_id", sb.RunID))
			}
		}
	}
	return nil
}
