package auth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
)

// MaxJWKSSize caps the JWKS a parser accepts, as the token directory caps
// every file it serves.
const MaxJWKSSize = 64 << 10

// maxJWKs bounds the number of keys in one set; a gateway holds a handful.
const maxJWKs = 64

// JWK is one RFC 7517 / RFC 8037 Ed25519 public key.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// JWKS is an RFC 7517 key set of Ed25519 public keys. A parsed JWKS
// resolves keys by kid.
type JWKS struct {
	Keys []JWK `json:"keys"`

	byKID map[string]ed25519.PublicKey
}

// NewJWK encodes an Ed25519 public key with its thumbprint as kid.
func NewJWK(pub ed25519.PublicKey) JWK {
	return JWK{
		Kty: "OKP",
		Crv: "Ed25519",
		X:   base64.RawURLEncoding.EncodeToString(pub),
		Kid: Thumbprint(pub),
		Use: "sig",
		Alg: "EdDSA",
	}
}

func sortJWKs(keys []JWK) {
	sort.Slice(keys, func(i, j int) bool { return keys[i].Kid < keys[j].Kid })
}

// Marshal encodes the set as JSON.
func (j *JWKS) Marshal() ([]byte, error) {
	out, err := json.Marshal(struct {
		Keys []JWK `json:"keys"`
	}{Keys: append([]JWK{}, j.Keys...)})
	if err != nil {
		return nil, fmt.Errorf("marshal jwks: %w", err)
	}
	return out, nil
}

// PublicKey implements KeyResolver.
func (j *JWKS) PublicKey(kid string) (ed25519.PublicKey, bool) {
	if j == nil {
		return nil, false
	}
	pub, ok := j.byKID[kid]
	return pub, ok
}

// ParseJWKS decodes and checks a JWKS. Every key must be an Ed25519 OKP key
// of the right length whose kid is its RFC 7638 thumbprint, so a set can
// never map a kid to another key; a key meant for other than signatures or
// for another algorithm is refused too.
func ParseJWKS(data []byte) (*JWKS, error) {
	if len(data) > MaxJWKSSize {
		return nil, fmt.Errorf("parse jwks: %d bytes exceeds the %d-byte limit", len(data), MaxJWKSSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw struct {
		Keys []JWK `json:"keys"`
	}
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("parse jwks: trailing data after the key set")
	}
	if raw.Keys == nil {
		return nil, fmt.Errorf("parse jwks: no \"keys\" member")
	}
	if len(raw.Keys) > maxJWKs {
		return nil, fmt.Errorf("parse jwks: %d keys exceeds the limit of %d", len(raw.Keys), maxJWKs)
	}
	set := &JWKS{Keys: raw.Keys, byKID: make(map[string]ed25519.PublicKey, len(raw.Keys))}
	for i, k := range raw.Keys {
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("parse jwks: key %d (kid %q): %w", i, k.Kid, err)
		}
		if _, dup := set.byKID[k.Kid]; dup {
			return nil, fmt.Errorf("parse jwks: key %d: duplicate kid %q", i, k.Kid)
		}
		set.byKID[k.Kid] = pub
	}
	return set, nil
}

func (k JWK) publicKey() (ed25519.PublicKey, error) {
	if k.Kty != "OKP" || k.Crv != "Ed25519" {
		return nil, fmt.Errorf("kty %q crv %q: only OKP/Ed25519 keys are accepted", k.Kty, k.Crv)
	}
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("use %q: only signature keys are accepted", k.Use)
	}
	if k.Alg != "" && k.Alg != "EdDSA" {
		return nil, fmt.Errorf("alg %q: only EdDSA is accepted", k.Alg)
	}
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil {
		return nil, fmt.Errorf("x is not base64url: %w", err)
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("x is %d bytes, want %d", len(x), ed25519.PublicKeySize)
	}
	pub := ed25519.PublicKey(x)
	if want := Thumbprint(pub); k.Kid != want {
		return nil, fmt.Errorf("kid is not the RFC 7638 thumbprint of the key (want %q)", want)
	}
	return pub, nil
}

// MergeResolvers returns a resolver that asks each resolver in turn.
func MergeResolvers(rs ...KeyResolver) KeyResolver { return resolvers(rs) }

type resolvers []KeyResolver

func (rs resolvers) PublicKey(kid string) (ed25519.PublicKey, bool) {
	for _, r := range rs {
		if r == nil {
			continue
		}
		if pub, ok := r.PublicKey(kid); ok {
			return pub, true
		}
	}
	return nil, false
}
