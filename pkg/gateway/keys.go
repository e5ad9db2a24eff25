package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
)

// A signing key's life, as the gateway runs it:
//
//  1. `keys rotate` creates the next key (store state next), adds its public
//     half to the JWKS served on /jwks.json at once, and marks every running
//     sandbox due, so the next sweep writes the JWKS with it into every token
//     directory and pushes it to every session beside a fresh token. It
//     signs nothing yet.
//  2. KeyPublishDelay later (at least one JWKS max-age, so any verifier
//     that caches /jwks.json has fetched it), the sweep activates it: tokens
//     minted from then on carry its kid. The previous key verifies on.
//  3. Once no unexpired token uses a verify key, the sweep retires it and it
//     leaves the JWKS.
//
// `keys rotate --now` skips step 2 (activating the waiting next key, or a
// new one): verifiers with a cached JWKS refuse new tokens until they
// refetch it.

// keyState is the gateway's view of the key set beside auth.KeySet: which
// key waits for activation. mu serialises key operations (rotate, activate,
// retire), which the sweep and the operator API run concurrently.
type keyState struct {
	mu sync.Mutex
	// next is the kid of the published key waiting for activation, "" if none.
	next string
	// nextAt is when it activates.
	nextAt time.Time
}

// loadKeys builds the key set from the store, creating the first signing
// key on a new store.
func (g *Gateway) loadKeys(ctx context.Context) error {
	stored, err := g.store.ListKeys(ctx)
	if err != nil {
		return err
	}
	var active *auth.SigningKey
	var verify []ed25519.PublicKey
	for _, k := range stored {
		switch k.State {
		case store.KeyActive:
			sk, err := auth.KeyFromSeed(k.Seed, k.CreatedAt)
			if err != nil {
				return fmt.Errorf("signing key %s from store: %w", k.KID, err)
			}
			active = sk
		case store.KeyNext:
			g.keyState.next, g.keyState.nextAt = k.KID, k.ActivateAt
			verify = append(verify, ed25519.PublicKey(k.Public))
		case store.KeyVerify:
			verify = append(verify, ed25519.PublicKey(k.Public))
		}
	}
	if active == nil {
		if active, err = g.newStoredKey(ctx); err != nil {
			return err
		}
		g.log.Info("created the first signing key", zap.String("kid", active.KID))
	}
	g.keys = auth.NewKeySet(active, verify...)
	return g.publishJWKS()
}

// newStoredKey generates a key and commits it as the active one.
func (g *Gateway) newStoredKey(ctx context.Context) (*auth.SigningKey, error) {
	sk, err := auth.GenerateKey(rand.Reader, g.now())
	if err != nil {
		return nil, err
	}
	err = g.store.InsertKey(ctx, store.SigningKey{KID: sk.KID, Seed: sk.Private.Seed(), Public: sk.Public,
		State: store.KeyVerify, CreatedAt: sk.CreatedAt})
	if err != nil {
		return nil, err
	}
	if err := g.store.ActivateKey(ctx, sk.KID); err != nil {
		return nil, err
	}
	return sk, nil
}

func (g *Gateway) publishJWKS() error {
	data, err := g.keys.JWKS().Marshal()
	if err != nil {
		return err
	}
	g.jwks.Store(&data)
	return nil
}

// KeyRotation is what RotateKeys did.
type KeyRotation struct {
	KID string
	// Active is true when KID signs from now on; otherwise it is published
	// and becomes active at ActivateAt.
	Active     bool
	ActivateAt time.Time
}

// RotateKeys starts a key rotation: it publishes a new signing key, which
// the sweep activates KeyPublishDelay later (see the top of this file). A
// rotation already waiting is refused (ErrKeyState): only one key is
// next at a time. With now, the key signs at once: the waiting next key if
// there is one, else a new key; verifiers that cache the JWKS then refuse
// new tokens until they refetch it.
func (g *Gateway) RotateKeys(ctx context.Context, now bool) (_ KeyRotation, err error) {
	defer outwardTo(&err)
	g.keyState.mu.Lock()
	defer g.keyState.mu.Unlock()
	if now {
		return g.rotateKeysNow(ctx)
	}
	if g.keyState.next != "" {
		return KeyRotation{}, fmt.Errorf("rotate signing key: %w: key %s is published and becomes active at %s; run `keys rotate --now` to activate it at once",
			ErrKeyState, g.keyState.next, g.keyState.nextAt.UTC().Format(time.RFC3339))
	}
	sk, err := auth.GenerateKey(rand.Reader, g.now())
	if err != nil {
		return KeyRotation{}, fmt.Errorf("rotate signing key: %w", err)
	}
	at := g.now().Add(g.cfg.KeyPublishDelay)
	err = g.store.InsertKey(ctx, store.SigningKey{KID: sk.KID, Seed: sk.Private.Seed(), Public: sk.Public,
		State: store.KeyNext, CreatedAt: sk.CreatedAt, ActivateAt: at})
	if err != nil {
		return KeyRotation{}, fmt.Errorf("rotate signing key: %w", err)
	}
	g.keys.Publish(sk.Public)
	g.keyState.next, g.keyState.nextAt = sk.KID, at
	if err := g.publishJWKS(); err != nil {
		return KeyRotation{}, err
	}
	// Every directory's jwks.json and every session learn the key with a
	// fresh token, minted by the next sweep: no write races a rotation.
	marked, err := g.store.MarkRunningDue(ctx)
	if err != nil {
		g.log.Warn("publish the next signing key to the sandboxes: they get it at their next rotation", zap.Error(err))
	}
	g.log.Info("published the next signing key", zap.String("kid", sk.KID), zap.Time("activate_at", at),
		zap.Int64("sandboxes_refreshed", marked))
	return KeyRotation{KID: sk.KID, ActivateAt: at}, nil
}

// rotateKeysNow activates the next key, or a new one, at once.
func (g *Gateway) rotateKeysNow(ctx context.Context) (KeyRotation, error) {
	if kid := g.keyState.next; kid != "" {
		if err := g.activateKey(ctx, kid); err != nil {
			return KeyRotation{}, err
		}
		return KeyRotation{KID: kid, Active: true}, nil
	}
	sk, err := g.newStoredKey(ctx)
	if err != nil {
		return KeyRotation{}, fmt.Errorf("rotate signing key: %w", err)
	}
	g.keys.Rotate(sk)
	if err := g.publishJWKS(); err != nil {
		return KeyRotation{}, err
	}
	g.log.Warn("rotated the signing key at once: verifiers with a cached JWKS refuse new tokens until they refetch it",
		zap.String("kid", sk.KID))
	return KeyRotation{KID: sk.KID, Active: true}, nil
}

// activateDueKeys activates the next key once its publish delay has
// passed; the sweep runs it before minting, so that sweep already signs
// with it.
func (g *Gateway) activateDueKeys(ctx context.Context) error {
	g.keyState.mu.Lock()
	defer g.keyState.mu.Unlock()
	if g.keyState.next == "" || g.now().Before(g.keyState.nextAt) {
		return nil
	}
	return g.activateKey(ctx, g.keyState.next)
}

// activateKey makes the published key kid the signing key. keyState.mu is
// held.
func (g *Gateway) activateKey(ctx context.Context, kid string) error {
	k, err := g.store.GetKey(ctx, kid)
	if err != nil {
		return fmt.Errorf("activate signing key: %w", err)
	}
	sk, err := auth.KeyFromSeed(k.Seed, k.CreatedAt)
	if err != nil {
		return fmt.Errorf("activate signing key %s: %w", kid, err)
	}
	if err := g.store.ActivateKey(ctx, kid); err != nil {
		return fmt.Errorf("activate signing key: %w", err)
	}
	g.keys.Rotate(sk)
	published := g.keyState.nextAt
	g.keyState.next, g.keyState.nextAt = "", time.Time{}
	if err := g.publishJWKS(); err != nil {
		return err
	}
	g.log.Info("activated the next signing key", zap.String("kid", kid), zap.Time("planned_at", published))
	return nil
}

// KeyState is where a signing key is in its life.
type KeyState string

// Signing key states.
const (
	KeyNext    = KeyState(store.KeyNext)    // published, signs from its ActivateAt
	KeyActive  = KeyState(store.KeyActive)  // signs new tokens
	KeyVerify  = KeyState(store.KeyVerify)  // only verifies
	KeyRetired = KeyState(store.KeyRetired) // neither
)

// SigningKey is a signing key as operators see it: never its private half.
type SigningKey struct {
	KID        string
	Public     ed25519.PublicKey
	State      KeyState
	CreatedAt  time.Time
	RetiredAt  time.Time // zero unless retired
	ActivateAt time.Time // when a next key becomes active; zero for the others
}

// ListKeys lists the signing keys the store holds, private halves omitted.
func (g *Gateway) ListKeys(ctx context.Context) (_ []SigningKey, err error) {
	defer outwardTo(&err)
	stored, err := g.store.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]SigningKey, 0, len(stored))
	for _, k := range stored {
		keys = append(keys, SigningKey{KID: k.KID, Public: k.Public, State: KeyState(k.State),
			CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, ActivateAt: k.ActivateAt})
	}
	return keys, nil
}

// retireUnusedKeys drops verify-only keys from the JWKS once no unexpired
// token uses them. The next key, which no token uses yet, stays.
func (g *Gateway) retireUnusedKeys(ctx context.Context) error {
	g.keyState.mu.Lock()
	defer g.keyState.mu.Unlock()
	active := g.keys.Active().KID
	inUse, err := g.store.KeysInUse(ctx, g.now().Add(-auth.Leeway))
	if err != nil {
		return err
	}
	used := make(map[string]bool, len(inUse))
	for _, kid := range inUse {
		used[kid] = true
	}
	changed := false
	for _, kid := range g.keys.KIDs() {
		if kid == active || kid == g.keyState.next || used[kid] {
			continue
		}
		if err := g.store.RetireKey(ctx, kid); err != nil {
			return err
		}
		if err := g.keys.Retire(kid); err != nil {
			return err
		}
		changed = true
		g.log.Info("retired signing key: no live token uses it", zap.String("kid", kid))
	}
	if changed {
		return g.publishJWKS()
	}
	return nil
}
