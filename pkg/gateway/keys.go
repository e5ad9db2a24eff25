package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
)

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

// RotateKeys makes a new signing key active. The previous key keeps
// verifying until no live token uses it; tokens minted from now on use the
// new key, and each carries the new JWKS to its sandbox beside it.
func (g *Gateway) RotateKeys(ctx context.Context) (string, error) {
	sk, err := g.newStoredKey(ctx)
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	g.keys.Rotate(sk)
	if err := g.publishJWKS(); err != nil {
		return "", err
	}
	g.log.Info("rotated signing key", zap.String("kid", sk.KID))
	return sk.KID, nil
}

// ListKeys lists the signing keys the store holds, private halves omitted.
func (g *Gateway) ListKeys(ctx context.Context) ([]store.SigningKey, error) {
	keys, err := g.store.ListKeys(ctx)
	for i := range keys {
		keys[i].Seed = nil
	}
	return keys, err
}

// retireUnusedKeys drops verify-only keys from the JWKS once no unexpired
// token uses them.
func (g *Gateway) retireUnusedKeys(ctx context.Context) error {
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
		if kid == active || used[kid] {
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
