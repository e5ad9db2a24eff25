package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

// cachingVerifier verifies sandkey tokens as a third-party library does:
// it fetches the JWKS, keeps it for the max-age it was served with, and
// does not fetch it again before that, whatever kid it meets. It shares
// no code with the gateway's verifier on purpose.
type cachingVerifier struct {
	fetch   func() []byte // the body of /jwks.json
	maxAge  time.Duration
	now     func() time.Time
	keys    map[string]ed25519.PublicKey
	expires time.Time
	fetches int
}

func (v *cachingVerifier) refresh() error {
	if v.keys != nil && v.now().Before(v.expires) {
		return nil
	}
	var set struct {
		Keys []struct{ Kty, Crv, Kid, X string }
	}
	if err := json.Unmarshal(v.fetch(), &set); err != nil {
		return err
	}
	v.keys = map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || k.Kty != "OKP" || k.Crv != "Ed25519" {
			return fmt.Errorf("bad JWK %+v", k)
		}
		v.keys[k.Kid] = ed25519.PublicKey(x)
	}
	v.expires = v.now().Add(v.maxAge)
	v.fetches++
	return nil
}

func (v *cachingVerifier) verify(raw string) error {
	if err := v.refresh(); err != nil {
		return err
	}
	_, err := jwt.Parse(raw, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if pub, ok := v.keys[kid]; ok {
			return pub, nil
		}
		return nil, fmt.Errorf("kid %s not in the cached JWKS", kid)
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(v.now), jwt.WithExpirationRequired())
	return err
}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// TestTokensMintedAfterKeyRotationVerifyWithACachedJWKS pins the key
// pre-publication: a verifier that fetched the JWKS just before `keys
// rotate` and honours max-age verifies every token minted from then on,
// through the new key's activation, without fetching early. The control
// shows the same verifier refusing a token after an immediate rotation.
func TestTokensMintedAfterKeyRotationVerifyWithACachedJWKS(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("third-party")
	v := &cachingVerifier{fetch: e.g.JWKSJSON, maxAge: e.g.JWKSMaxAge(), now: e.clock.Now}
	if err := v.verify(e.dirTokenRaw(sb.ID)); err != nil {
		t.Fatalf("verify the first token: %v", err)
	}
	oldKID := e.g.keys.Active().KID

	rotation, err := e.g.RotateKeys(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rotation.Active || !rotation.ActivateAt.Equal(e.clock.Now().Add(DefaultKeyPublishDelay)) {
		t.Fatalf("rotation %+v: want the key published, active after %s", rotation, DefaultKeyPublishDelay)
	}
	if !strings.Contains(string(e.g.JWKSJSON()), rotation.KID) {
		t.Fatal("the next key is not in /jwks.json at once")
	}
	if _, err := e.g.RotateKeys(ctx, false); !errors.Is(err, ErrKeyState) || !strings.Contains(err.Error(), "--now") {
		t.Errorf("second rotation while one waits: %v, want ErrKeyState pointing at --now", err)
	}
	// The next sweep refreshes every running sandbox: its directory's
	// jwks.json (and its session) carry the next key, beside a token the
	// current key still signs.
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	dirJWKS, err := tokendir.ReadFile(e.g.tokenDir(sb.ID), tokendir.JWKSFile)
	if err != nil || !strings.Contains(string(dirJWKS), rotation.KID) {
		t.Fatalf("token directory's jwks.json lacks the next key after a sweep: %v", err)
	}
	if kid := kidOf(t, e.dirTokenRaw(sb.ID)); kid != oldKID {
		t.Fatalf("token minted before activation signed by %s, want the current key %s", kid, oldKID)
	}
	states := map[string]KeyState{}
	keys, _ := e.g.ListKeys(ctx)
	for _, k := range keys {
		states[k.KID] = k.State
	}
	if len(states) != 2 || states[oldKID] != KeyActive || states[rotation.KID] != KeyNext {
		t.Fatalf("key states after rotate: %v, want %s active and %s next", states, oldKID, rotation.KID)
	}

	// Ten-second steps through the activation and two token lifetimes:
	// every token in the directory verifies with what the verifier cached.
	signedByNew := 0
	for step := time.Duration(0); step < DefaultKeyPublishDelay+2*lifetime; step += 10 * time.Second {
		e.clock.Add(10 * time.Second)
		if _, err := e.g.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		raw := e.dirTokenRaw(sb.ID)
		if err := v.verify(raw); err != nil {
			t.Fatalf("%s after keys rotate: a verifier caching the JWKS for %s refused the token: %v", step+10*time.Second, v.maxAge, err)
		}
		if kidOf(t, raw) == rotation.KID {
			signedByNew++
		}
	}
	if signedByNew == 0 {
		t.Fatal("the next key never signed")
	}
	if v.fetches > int((DefaultKeyPublishDelay+2*lifetime)/v.maxAge)+2 {
		t.Errorf("the verifier fetched the JWKS %d times: more than its max-age asks", v.fetches)
	}

	// Control: an immediate rotation breaks the same verifier until its
	// cache expires.
	v.keys = nil
	if err := v.verify(e.dirTokenRaw(sb.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.RotateKeys(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := v.verify(e.dirTokenRaw(sb.ID)); err == nil || !strings.Contains(err.Error(), "not in the cached JWKS") {
		t.Fatalf("after keys rotate --now the cached verifier said %v, want a refusal of the unknown kid", err)
	}
}

func TestNextKeySurvivesARestartAndActivatesOnTime(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("restart")
	rotation, err := e.g.RotateKeys(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	e.restart(DefaultKeyPublishDelay / 2)
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if e.g.keys.Active().KID == rotation.KID {
		t.Fatal("the next key activated before its time")
	}
	if !strings.Contains(string(e.g.JWKSJSON()), rotation.KID) {
		t.Fatal("the next key left the JWKS across a restart")
	}
	e.clock.Add(DefaultKeyPublishDelay / 2)
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if e.g.keys.Active().KID != rotation.KID {
		t.Fatal("the next key did not activate at its time")
	}
	if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if kid := kidOf(t, e.dirTokenRaw(sb.ID)); kid != rotation.KID {
		t.Errorf("token after activation signed by %s, want %s", kid, rotation.KID)
	}
	keys, err := e.g.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.KID == rotation.KID && k.State != KeyActive {
			t.Errorf("key %s is %s after activation, want active", k.KID, k.State)
		}
	}
}

func (e *env) dirTokenRaw(id string) string {
	e.t.Helper()
	raw, err := tokendir.ReadToken(e.g.tokenDir(id))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(raw)
}
