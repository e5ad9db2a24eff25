package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store"
)

// A store restored from an older backup has counters behind generations
// that were issued and whose tokens still exist. Before it mints, the
// gateway looks for that evidence and raises the sandbox's generation
// floor past it (store.RaiseGenerationFloor), so that no generation number
// is ever issued twice:
//   - at reconcile, for every running sandbox, and before a start
//     (mintOne), a manual rotation (of a stopped sandbox too, which no
//     reconcile looked at) or a reissue: the token in the sandbox's
//     directory, which a gateway writes before it pushes;
//   - whenever a supervisor presents a token signed for its sandbox that
//     the store never issued, on any listener; on an attested socket it is
//     then answered with a generation above it (Reissue).
//
// Only tokens that verify against the gateway's keys for that sandbox
// count: the Hello's token_gen is not signed, and a workload that could
// move the counter at will could exhaust it.

// Evidence sources, as logged and counted.
const (
	evidenceDirectory = "directory"
	evidencePresented = "presented"
)

// raiseFloor raises the floor of sandbox id to gen, seen in evidence, and
// logs it when it moved.
func (g *Gateway) raiseFloor(ctx context.Context, id string, gen uint64, evidence string) (bool, error) {
	raised, err := g.store.RaiseGenerationFloor(ctx, id, gen)
	if err != nil {
		return false, err
	}
	if raised {
		g.metrics.floorRaised.WithLabelValues(evidence).Inc()
		g.log.Warn("generation seen above the store's counter (was the store restored from a backup?); new generations count on from it",
			zap.String("sandbox", id), zap.Uint64("gen", gen), zap.String("evidence", evidence))
	}
	return raised, nil
}

// dirHolds is what a sandbox's token directory holds, as floorFromDir
// read it.
type dirHolds int

const (
	// dirNothing: no token, or one that is not a token of the sandbox
	// (floorFromDir's error says why).
	dirNothing dirHolds = iota
	// dirBehind: a generation below the store's newest.
	dirBehind
	// dirLatest: the store's newest generation.
	dirLatest
	// dirForgotten: a generation above the store's counter, signed for the
	// sandbox: the store never issued it, and the floor is now past it.
	dirForgotten
)

// floorFromDir reads the token in the directory of sb and says what it
// holds. When that generation is above the store's counter and the token
// is signed by the gateway's keys for sb, it first raises the floor of sb
// to it: the sandbox needs a new token, which the store never issued.
// A token that is unreadable, does not parse or is another sandbox's is
// dirNothing, with an error naming the directory.
func (g *Gateway) floorFromDir(ctx context.Context, sb store.Sandbox) (dirHolds, error) {
	dir := g.tokenDir(sb.ID)
	raw, err := tokendir.ReadToken(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dirNothing, nil
	}
	if err != nil {
		return dirNothing, err
	}
	s := strings.TrimSpace(string(raw))
	// Parse before verifying: the usual directory holds the store's own
	// latest generation, and reconcile should not verify thousands of
	// signatures to learn it.
	seen, err := auth.ParseUnverified(s)
	if err != nil {
		return dirNothing, fmt.Errorf("token in %s: %w", dir, err)
	}
	switch {
	case seen.SandboxID() != sb.ID:
		return dirNothing, fmt.Errorf("token in %s: %s is sandbox %s's", dir, seen, seen.SandboxID())
	case seen.Gen() < sb.LatestGen:
		return dirBehind, nil
	case seen.Gen() == sb.LatestGen:
		return dirLatest, nil
	}
	tok, err := g.verify.VerifyIgnoringExpiry(s, sb.ID)
	if err != nil {
		return dirNothing, fmt.Errorf("token in %s (gen %d, above the store's %d): %w", dir, seen.Gen(), sb.LatestGen, err)
	}
	if _, err := g.raiseFloor(ctx, sb.ID, tok.Gen(), evidenceDirectory); err != nil {
		return dirNothing, err
	}
	return dirForgotten, nil
}

// floorFromDirLogged is floorFromDir before a single mint (a start, a
// manual rotation, a reissue), which goes on whatever it found: a
// directory it cannot read is logged, not fatal.
func (g *Gateway) floorFromDirLogged(ctx context.Context, sb store.Sandbox) {
	if _, err := g.floorFromDir(ctx, sb); err != nil {
		g.log.Warn("read the token directory for generations the store forgot", zap.String("sandbox", sb.ID), zap.Error(err))
	}
}

// Reissue implements session.Authority: the latest token of sandboxID when
// it is above `above` and unexpired, or else a new generation minted above
// `above` and above the sandbox's directory.
func (g *Gateway) Reissue(ctx context.Context, sandboxID string, above uint64) (*auth.Token, error) {
	if _, err := g.raiseFloor(ctx, sandboxID, above, evidencePresented); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
		}
		return nil, err
	}
	sb, err := g.store.GetSandbox(ctx, sandboxID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	if err != nil {
		return nil, err
	}
	g.floorFromDirLogged(ctx, sb)
	if latest, err := g.latestToken(ctx, sandboxID); err == nil && latest.Gen() > above && g.now().Before(latest.ExpiresAt()) {
		return latest, nil
	}
	tokens, err := g.mint(ctx, []string{sandboxID}, "reissue")
	if err != nil {
		return nil, err
	}
	tok := tokens[sandboxID]
	if tok == nil { // deleted meanwhile
		return nil, fmt.Errorf("sandbox %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	return tok, nil
}
