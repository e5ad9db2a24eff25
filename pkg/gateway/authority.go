package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store"
)

// The Gateway is the session server's token authority.
var _ session.Authority = (*Gateway)(nil)

// Latest implements session.Authority.
func (g *Gateway) Latest(ctx context.Context, sandboxID string) (*auth.Token, error) {
	tok, err := g.latestToken(ctx, sandboxID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	return tok, err
}

// Authenticate implements session.Authority: the token must verify, belong
// to a sandbox the store knows, and be one of its two newest generations
// (the jti must match the one the store recorded for that generation, so a
// token minted by a store restored from backup cannot pass for another).
// A verified token the store never issued is refused with a
// *session.NotIssuedError, after its generation has raised the sandbox's
// floor: whatever the listener, the next generation is minted above it.
func (g *Gateway) Authenticate(ctx context.Context, raw, sandboxID string, allowExpired bool) (*auth.Token, error) {
	verify := g.verify.Verify
	if allowExpired {
		verify = g.verify.VerifyIgnoringExpiry
	}
	tok, err := verify(raw, sandboxID)
	if err != nil {
		g.metrics.rejected.WithLabelValues(auth.ReasonOf(err)).Inc()
		return nil, err
	}
	verdict, err := g.store.IsAcceptable(ctx, sandboxID, tok.Gen(), tok.JTI())
	if err != nil {
		return nil, err
	}
	switch verdict {
	case store.VerdictAccepted:
		g.adoptPresented(ctx, tok)
		return tok, nil
	case store.VerdictUnknownSandbox:
		g.metrics.rejected.WithLabelValues(reasonUnknownSandbox).Inc()
		return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
	case store.VerdictSuperseded:
		g.metrics.rejected.WithLabelValues(reasonSuperseded).Inc()
		return nil, fmt.Errorf("%s: %w", tok, session.ErrSuperseded)
	default:
		// Signed by our key but not the generation the store recorded: a
		// store restored from backup, or a key that leaked.
		g.metrics.rejected.WithLabelValues(reasonNotIssued).Inc()
		if _, err := g.raiseFloor(ctx, sandboxID, tok.Gen(), evidencePresented); errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
		} else if err != nil {
			return nil, err
		}
		return nil, &session.NotIssuedError{Token: tok, Reason: string(verdict)}
	}
}

// RecordDelivered implements session.Authority.
func (g *Gateway) RecordDelivered(ctx context.Context, sandboxID string, gen uint64) error {
	return g.store.RecordDelivered(ctx, sandboxID, gen)
}

// JWKS implements session.Authority.
func (g *Gateway) JWKS() []byte { return g.JWKSJSON() }
