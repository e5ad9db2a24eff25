package auth

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

type fixture struct {
	now    time.Time
	keys   *KeySet
	issuer *Issuer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{now: t0}
	key, err := GenerateKey(rand.Reader, t0)
	if err != nil {
		t.Fatal(err)
	}
	f.keys = NewKeySet(key)
	f.issuer, err = NewIssuer(IssuerConfig{Keys: f.keys, Issuer: "sandkey-gateway", Audience: "sandkey",
		TrustDomain: "sandkey.test", Lifetime: time.Minute, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) verifier() *Verifier {
	v := f.issuer.Verifier()
	v.Now = func() time.Time { return f.now }
	return v
}

func (f *fixture) mint(t testing.TB, id string, gen uint64) *Token {
	t.Helper()
	tok, err := f.issuer.Mint(id, gen)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sign builds a token by hand, so tests can break one rule at a time.
func sign(t testing.TB, key *SigningKey, header map[string]any, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sig := ed25519.Sign(key.Private, []byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func validParts(f *fixture) (map[string]any, map[string]any) {
	key := f.keys.Active()
	header := map[string]any{"alg": "EdDSA", "typ": TokenType, "kid": key.KID}
	claims := map[string]any{
		"iss": "sandkey-gateway", "aud": []string{"sandkey"}, "sub": "spiffe://sandkey.test/sandbox/sb-1",
		"sandbox_id": "sb-1", "gen": 3, "iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(time.Minute).Unix(),
		"jti": "j-1",
	}
	return header, claims
}

func TestMintedTokenVerifiesWithAllClaims(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, "sb-1", 7)
	got, err := f.verifier().Verify(tok.Raw(), "sb-1")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	c := got.Claims()
	if c.Gen != 7 || c.SandboxID != "sb-1" || c.Subject != "spiffe://sandkey.test/sandbox/sb-1" ||
		c.Issuer != "sandkey-gateway" || c.Audience[0] != "sandkey" || c.ID == "" ||
		!c.ExpiresAt.Equal(t0.Add(time.Minute)) || !c.IssuedAt.Equal(t0) || !c.NotBefore.Equal(t0) {
		t.Fatalf("claims = %+v", c)
	}
	parts := strings.Split(tok.Raw(), ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	if h["alg"] != "EdDSA" || h["typ"] != TokenType || h["kid"] != f.keys.Active().KID {
		t.Fatalf("header = %v", h)
	}
}

func TestEveryMintHasAUniqueJTI(t *testing.T) {
	f := newFixture(t)
	seen := map[string]bool{}
	for gen := uint64(1); gen <= 100; gen++ {
		jti := f.mint(t, "sb-1", gen).JTI()
		if seen[jti] {
			t.Fatalf("jti %s repeated", jti)
		}
		seen[jti] = true
	}
}

func TestLifetimeUnderMinimumIsRefused(t *testing.T) {
	key, _ := GenerateKey(rand.Reader, t0)
	for _, d := range []time.Duration{0, -time.Second, 9 * time.Second, time.Millisecond} {
		_, err := NewIssuer(IssuerConfig{Keys: NewKeySet(key), Issuer: "i", Audience: "a", TrustDomain: "td", Lifetime: d})
		if err == nil || !strings.Contains(err.Error(), "at least 10s") {
			t.Errorf("lifetime %s: err = %v, want a refusal naming the minimum", d, err)
		}
	}
	if _, err := NewIssuer(IssuerConfig{Keys: NewKeySet(key), Issuer: "i", Audience: "a", TrustDomain: "td", Lifetime: MinLifetime}); err != nil {
		t.Errorf("lifetime %s refused: %v", MinLifetime, err)
	}
}

func TestVerifyRefusesEachBrokenRule(t *testing.T) {
	f := newFixture(t)
	other, _ := GenerateKey(rand.Reader, t0)
	cases := []struct {
		name   string
		edit   func(h, c map[string]any)
		key    *SigningKey
		reason string
	}{
		{"wrong sandbox_id", func(h, c map[string]any) { c["sandbox_id"] = "sb-2"; c["sub"] = "spiffe://sandkey.test/sandbox/sb-2" }, nil, ReasonSandboxMismatch},
		{"expired past leeway", func(h, c map[string]any) { c["exp"] = t0.Add(-31 * time.Second).Unix() }, nil, ReasonExpired},
		{"not yet valid", func(h, c map[string]any) { c["nbf"] = t0.Add(time.Minute).Unix() }, nil, ReasonNotYetValid},
		{"iat in the future", func(h, c map[string]any) { c["iat"] = t0.Add(time.Minute).Unix() }, nil, ReasonNotYetValid},
		{"missing exp", func(h, c map[string]any) { delete(c, "exp") }, nil, ReasonClaims},
		{"missing iat", func(h, c map[string]any) { delete(c, "iat") }, nil, ReasonClaims},
		{"missing iss", func(h, c map[string]any) { delete(c, "iss") }, nil, ReasonClaims},
		{"wrong iss", func(h, c map[string]any) { c["iss"] = "evil" }, nil, ReasonClaims},
		{"missing aud", func(h, c map[string]any) { delete(c, "aud") }, nil, ReasonClaims},
		{"wrong aud", func(h, c map[string]any) { c["aud"] = "other" }, nil, ReasonClaims},
		{"missing sub", func(h, c map[string]any) { delete(c, "sub") }, nil, ReasonClaims},
		{"sub of another sandbox", func(h, c map[string]any) { c["sub"] = "spiffe://sandkey.test/sandbox/sb-2" }, nil, ReasonClaims},
		{"sub of another trust domain", func(h, c map[string]any) { c["sub"] = "spiffe://evil/sandbox/sb-1" }, nil, ReasonClaims},
		{"missing jti", func(h, c map[string]any) { delete(c, "jti") }, nil, ReasonClaims},
		{"missing gen", func(h, c map[string]any) { delete(c, "gen") }, nil, ReasonClaims},
		{"missing sandbox_id", func(h, c map[string]any) { delete(c, "sandbox_id") }, nil, ReasonClaims},
		{"unknown key", func(h, c map[string]any) { h["kid"] = other.KID }, other, ReasonUnknownKey},
		{"known kid, other key's signature", func(h, c map[string]any) {}, other, ReasonSignature},
		{"missing kid", func(h, c map[string]any) { delete(h, "kid") }, nil, ReasonUnknownKey},
		{"wrong typ", func(h, c map[string]any) { h["typ"] = "JWT" }, nil, ReasonType},
		{"alg ES256 header", func(h, c map[string]any) { h["alg"] = "ES256" }, nil, ReasonAlgorithm},
		{"alg made up", func(h, c map[string]any) { h["alg"] = "XX999" }, nil, ReasonAlgorithm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, c := validParts(f)
			tc.edit(h, c)
			key := tc.key
			if key == nil {
				key = f.keys.Active()
			}
			raw := sign(t, key, h, c)
			_, err := f.verifier().Verify(raw, "sb-1")
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if strings.Contains(err.Error(), raw) {
				t.Fatal("error message contains the token")
			}
		})
	}
	// The control: the unedited parts verify, so every case above fails for its own edit.
	h, c := validParts(f)
	if _, err := f.verifier().Verify(sign(t, f.keys.Active(), h, c), "sb-1"); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
}

func TestExpiryLeewayIsThirtySeconds(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, "sb-1", 1)
	f.now = tok.ExpiresAt().Add(29 * time.Second)
	if _, err := f.verifier().Verify(tok.Raw(), "sb-1"); err != nil {
		t.Fatalf("29 s past exp refused: %v", err)
	}
	f.now = tok.ExpiresAt().Add(31 * time.Second)
	if _, err := f.verifier().Verify(tok.Raw(), "sb-1"); !errors.Is(err, ErrExpired) {
		t.Fatalf("31 s past exp: err = %v, want ErrExpired", err)
	}
	if _, err := f.verifier().VerifyIgnoringExpiry(tok.Raw(), "sb-1"); err != nil {
		t.Fatalf("VerifyIgnoringExpiry refused an expired token: %v", err)
	}
	if _, err := f.verifier().VerifyIgnoringExpiry(tok.Raw(), "sb-2"); !errors.Is(err, ErrSandboxMismatch) {
		t.Fatalf("VerifyIgnoringExpiry accepted another sandbox's token: %v", err)
	}
}

func TestAlgNoneIsRefused(t *testing.T) {
	f := newFixture(t)
	_, c := validParts(f)
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(c))
	tok.Header["kid"] = f.keys.Active().KID
	tok.Header["typ"] = TokenType
	raw, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier().Verify(raw, "sb-1"); ReasonOf(err) != ReasonAlgorithm {
		t.Fatalf("alg none: err = %v, want algorithm", err)
	}
}

func TestHS256KeyedWithThePublicKeyIsRefused(t *testing.T) {
	f := newFixture(t)
	h, c := validParts(f)
	h["alg"] = "HS256"
	hb, _ := json.Marshal(h)
	cb, _ := json.Marshal(c)
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	mac := hmac.New(sha256.New, f.keys.Active().Public)
	mac.Write([]byte(input))
	raw := input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	if _, err := f.verifier().Verify(raw, "sb-1"); ReasonOf(err) != ReasonAlgorithm {
		t.Fatalf("HS256: err = %v, want algorithm", err)
	}
}

func TestMalformedTokensAreRefused(t *testing.T) {
	f := newFixture(t)
	good := f.mint(t, "sb-1", 1).Raw()
	for name, raw := range map[string]string{
		"empty":         "",
		"garbage":       "not a token",
		"two parts":     "a.b",
		"bad base64":    "!!!.???.###",
		"json not obj":  base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".e30.c2ln",
		"oversized":     strings.Repeat("a", MaxTokenSize) + ".b.c",
		"truncated sig": good[:len(good)-10],
		"flipped payload": func() string {
			p := strings.Split(good, ".")
			return p[0] + "." + p[1][:len(p[1])-2] + "AA" + "." + p[2]
		}(),
	} {
		_, err := f.verifier().Verify(raw, "sb-1")
		if r := ReasonOf(err); r != ReasonMalformed && r != ReasonSignature {
			t.Errorf("%s: reason %q (%v), want malformed or signature", name, r, err)
		}
	}
}

func TestRotatedKeySignsAndOldKeyStillVerifies(t *testing.T) {
	f := newFixture(t)
	before := f.mint(t, "sb-1", 1)
	oldKID := f.keys.Active().KID
	next, _ := GenerateKey(rand.Reader, t0)
	f.keys.Rotate(next)
	after := f.mint(t, "sb-1", 2)
	for _, tok := range []*Token{before, after} {
		if _, err := f.verifier().Verify(tok.Raw(), "sb-1"); err != nil {
			t.Fatalf("%s refused after rotation: %v", tok, err)
		}
	}
	if err := f.keys.Retire(next.KID); err == nil {
		t.Fatal("retiring the active key succeeded")
	}
	if err := f.keys.Retire(oldKID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier().Verify(before.Raw(), "sb-1"); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("token of a retired key: err = %v, want unknown_key", err)
	}
}

func TestJWKSRoundTripVerifies(t *testing.T) {
	f := newFixture(t)
	old := f.mint(t, "sb-1", 1)
	next, _ := GenerateKey(rand.Reader, t0)
	f.keys.Rotate(next)
	data, err := f.keys.JWKS().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0].Kid != next.KID {
		t.Fatalf("jwks keys = %+v, want the active key first of two", set.Keys)
	}
	v := f.verifier()
	v.Keys = set
	for _, tok := range []*Token{old, f.mint(t, "sb-1", 2)} {
		if _, err := v.Verify(tok.Raw(), "sb-1"); err != nil {
			t.Fatalf("verify %s against parsed JWKS: %v", tok, err)
		}
	}
}

func TestThumbprintMatchesRFC8037Example(t *testing.T) {
	// RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if got, want := Thumbprint(x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("thumbprint = %s, want %s", got, want)
	}
}

func TestParseJWKSRefusesBadSets(t *testing.T) {
	key, _ := GenerateKey(rand.Reader, t0)
	good := NewJWK(key.Public)
	mutate := func(edit func(k *JWK)) string {
		k := good
		edit(&k)
		b, _ := json.Marshal(map[string]any{"keys": []JWK{k}})
		return string(b)
	}
	for name, data := range map[string]string{
		"not json":       "{",
		"no keys member": `{}`,
		"trailing data":  `{"keys":[]} {}`,
		"wrong kty":      mutate(func(k *JWK) { k.Kty = "RSA" }),
		"wrong crv":      mutate(func(k *JWK) { k.Crv = "X25519" }),
		"kid not thumb":  mutate(func(k *JWK) { k.Kid = "mine" }),
		"short x":        mutate(func(k *JWK) { k.X = "AAAA" }),
		"bad base64 x":   mutate(func(k *JWK) { k.X = "!!" }),
		"encryption use": mutate(func(k *JWK) { k.Use = "enc" }),
		"other alg":      mutate(func(k *JWK) { k.Alg = "ES256" }),
		"oversized":      `{"keys":[` + strings.Repeat(" ", MaxJWKSSize) + `]}`,
		"duplicate kid":  func() string { b, _ := json.Marshal(map[string]any{"keys": []JWK{good, good}}); return string(b) }(),
	} {
		if _, err := ParseJWKS([]byte(data)); err == nil || !strings.Contains(err.Error(), "parse jwks") {
			t.Errorf("%s: err = %v, want a parse jwks error", name, err)
		}
	}
	if _, err := ParseJWKS([]byte(mutate(func(*JWK) {}))); err != nil {
		t.Fatalf("control set refused: %v", err)
	}
}

func TestTokenStringNeverRevealsTheToken(t *testing.T) {
	f := newFixture(t)
	tok := f.mint(t, "sb-1", 4)
	s := tok.String()
	if strings.Contains(s, tok.Raw()) || strings.Contains(s, strings.Split(tok.Raw(), ".")[2]) {
		t.Fatalf("String() reveals the token: %s", s)
	}
	if !strings.Contains(s, "gen=4") || !strings.Contains(s, tok.JTI()) {
		t.Fatalf("String() = %s, want gen and jti", s)
	}
}

func TestMintEncodesUnusualIssuerAndAudience(t *testing.T) {
	key, _ := GenerateKey(rand.Reader, t0)
	iss, err := NewIssuer(IssuerConfig{Keys: NewKeySet(key), Issuer: "gw \"quoted\" \\ é <&>", Audience: "aud\n\t",
		TrustDomain: "td", Lifetime: time.Minute, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint("sb-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	v := iss.Verifier()
	got, err := v.Verify(tok.Raw(), "sb-1")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if c := got.Claims(); c.Issuer != "gw \"quoted\" \\ é <&>" || c.Audience[0] != "aud\n\t" {
		t.Fatalf("claims round trip: iss %q aud %q", c.Issuer, c.Audience)
	}
}

func TestTokenNamesTheKeyThatSignedIt(t *testing.T) {
	f := newFixture(t)
	oldKID := f.keys.Active().KID
	before := f.mint(t, "sb-1", 1)
	next, _ := GenerateKey(rand.Reader, t0)
	next.CreatedAt = t0
	f.keys.Rotate(next)
	after := f.mint(t, "sb-1", 2)
	if before.KID() != oldKID || after.KID() != next.KID {
		t.Fatalf("minted kids %s, %s; want %s, %s", before.KID(), after.KID(), oldKID, next.KID)
	}
	verified, err := f.verifier().Verify(before.Raw(), "sb-1")
	if err != nil || verified.KID() != oldKID {
		t.Fatalf("verified token's kid %q (%v), want %s", verified.KID(), err, oldKID)
	}
}

func TestResignFromStoredClaimsGivesTheOriginalBytes(t *testing.T) {
	f := newFixture(t)
	f.now = t0.Add(1500 * time.Millisecond) // Mint truncates to the second
	orig := f.mint(t, "sb-1", 7)
	stored := StoredClaims{SandboxID: orig.SandboxID(), Gen: orig.Gen(), JTI: orig.JTI(), KID: orig.KID(),
		IssuedAt: orig.IssuedAt(), ExpiresAt: orig.ExpiresAt()}

	// Another replica: its own issuer and key set, the same configuration
	// and keys (loaded from the shared store), a later clock.
	other := NewKeySet(nil)
	next, err := GenerateKey(rand.Reader, t0)
	if err != nil {
		t.Fatal(err)
	}
	other.Replace(next, f.keys.Active())
	issuer, err := NewIssuer(IssuerConfig{Keys: other, Issuer: "sandkey-gateway", Audience: "sandkey",
		TrustDomain: "sandkey.test", Lifetime: time.Minute, Now: func() time.Time { return t0.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	again, err := issuer.Resign(stored)
	if err != nil {
		t.Fatal(err)
	}
	if again.Raw() != orig.Raw() {
		t.Fatalf("re-signed token differs from the original:\n got %s\nwant %s", again.Raw(), orig.Raw())
	}
	if again.KID() != orig.KID() || again.Claims().Gen != 7 {
		t.Errorf("re-signed token %v, kid %s; want the original's", again, again.KID())
	}

	stored.KID = "no-such-key"
	if _, err := issuer.Resign(stored); !errors.Is(err, ErrUnknownSigner) {
		t.Errorf("Resign with an unknown kid: %v, want ErrUnknownSigner", err)
	}
}
