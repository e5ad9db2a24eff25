package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// SigningKey is an Ed25519 key pair with its RFC 7638 key id.
type SigningKey struct {
	KID       string
	Private   ed25519.PrivateKey
	Public    ed25519.PublicKey
	CreatedAt time.Time
}

// GenerateKey makes a new signing key from rand (crypto/rand.Reader in
// production).
func GenerateKey(rand io.Reader, now time.Time) (*SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return &SigningKey{KID: Thumbprint(pub), Private: priv, Public: pub, CreatedAt: now}, nil
}

// KeyFromSeed rebuilds a signing key from its 32-byte seed, as stored.
func KeyFromSeed(seed []byte, createdAt time.Time) (*SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("ed25519 seed: got %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return &SigningKey{KID: Thumbprint(pub), Private: priv, Public: pub, CreatedAt: createdAt}, nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key:
// SHA-256 over the required members in lexicographic order, base64url
// without padding.
func Thumbprint(pub ed25519.PublicKey) string {
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeyResolver finds the public key for a key id.
type KeyResolver interface {
	PublicKey(kid string) (ed25519.PublicKey, bool)
}

// KeySet holds one active signing key and older verify-only keys. It is
// safe for concurrent use; Rotate and Retire take effect for the next Mint
// and the next verification.
type KeySet struct {
	mu     sync.RWMutex
	active *SigningKey
	verify map[string]ed25519.PublicKey // every key that verifies, the active one included
	// signers are the keys whose private half the set holds: the active
	// one, those it replaced, and those added with Replace; Resign signs
	// with them.
	signers map[string]*SigningKey
}

// ErrNoActiveKey is returned when a key set has nothing to sign with.
var ErrNoActiveKey = errors.New("key set has no active signing key")

// NewKeySet returns a key set that signs with active and verifies with
// active and every key in verifyOnly.
func NewKeySet(active *SigningKey, verifyOnly ...ed25519.PublicKey) *KeySet {
	ks := &KeySet{verify: make(map[string]ed25519.PublicKey), signers: make(map[string]*SigningKey)}
	for _, pub := range verifyOnly {
		ks.verify[Thumbprint(pub)] = pub
	}
	if active != nil {
		ks.active = active
		ks.verify[active.KID] = active.Public
		ks.signers[active.KID] = active
	}
	return ks
}

// Replace makes the set exactly active (which may be nil) and others, which
// verify and whose private halves Resign may use, in one step: a replica
// reloading the key set another replica changed.
func (ks *KeySet) Replace(active *SigningKey, others ...*SigningKey) {
	verify := make(map[string]ed25519.PublicKey, len(others)+1)
	signers := make(map[string]*SigningKey, len(others)+1)
	for _, k := range append(others, active) {
		if k != nil {
			verify[k.KID] = k.Public
			signers[k.KID] = k
		}
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.active, ks.verify, ks.signers = active, verify, signers
}

// Signer returns the key kid with its private half, if the set holds it.
func (ks *KeySet) Signer(kid string) (*SigningKey, bool) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	k, ok := ks.signers[kid]
	return k, ok
}

// Active returns the current signing key, or nil.
func (ks *KeySet) Active() *SigningKey {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.active
}

// Rotate makes next the signing key; the previous one stays for
// verification until it is retired.
func (ks *KeySet) Rotate(next *SigningKey) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.active = next
	ks.verify[next.KID] = next.Public
	ks.signers[next.KID] = next
}

// Publish adds a verify-only key: the next signing key, published before
// it signs so that verifiers holding this set learn it first.
func (ks *KeySet) Publish(pub ed25519.PublicKey) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.verify[Thumbprint(pub)] = pub
}

// Retire removes a verify-only key. The active key cannot be retired.
func (ks *KeySet) Retire(kid string) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.active != nil && ks.active.KID == kid {
		return fmt.Errorf("retire key %s: it is the active signing key; rotate first", kid)
	}
	delete(ks.verify, kid)
	delete(ks.signers, kid)
	return nil
}

// PublicKey implements KeyResolver.
func (ks *KeySet) PublicKey(kid string) (ed25519.PublicKey, bool) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	pub, ok := ks.verify[kid]
	return pub, ok
}

// KIDs lists the key ids that verify, in no particular order.
func (ks *KeySet) KIDs() []string {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	kids := make([]string, 0, len(ks.verify))
	for kid := range ks.verify {
		kids = append(kids, kid)
	}
	return kids
}

// JWKS returns the public half of the key set, active key first.
func (ks *KeySet) JWKS() *JWKS {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	set := &JWKS{}
	if ks.active != nil {
		set.Keys = append(set.Keys, NewJWK(ks.active.Public))
	}
	for kid, pub := range ks.verify {
		if ks.active != nil && kid == ks.active.KID {
			continue
		}
		set.Keys = append(set.Keys, NewJWK(pub))
	}
	sortJWKs(set.Keys[min(1, len(set.Keys)):])
	return set
}
