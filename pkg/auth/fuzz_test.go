package auth

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// fuzzKey is fixed so that the seed corpus holds tokens that verify.
var fuzzKey, _ = KeyFromSeed(make([]byte, ed25519.SeedSize), t0)

func FuzzVerify(f *testing.F) {
	keys := NewKeySet(fuzzKey)
	iss, err := NewIssuer(IssuerConfig{Keys: keys, Issuer: "i", Audience: "a", TrustDomain: "td",
		Lifetime: time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	tok, _ := iss.Mint("sb-1", 1)
	f.Add(tok.Raw(), "sb-1")
	f.Add(tok.Raw()+"x", "sb-1")
	f.Add("eyJhbGciOiJub25lIn0.e30.", "sb-1")
	f.Add("..", "")
	f.Add("a.b.c", "sb-1")
	v := iss.Verifier()
	f.Fuzz(func(t *testing.T, raw, sandboxID string) {
		got, err := v.Verify(raw, sandboxID)
		if err != nil {
			if ReasonOf(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Anything accepted must be signed by our key for this sandbox.
		if got.SandboxID() != sandboxID || got.Gen() == 0 || got.Raw() != raw {
			t.Fatalf("accepted %s for %q", got, sandboxID)
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	good, _ := NewKeySet(fuzzKey).JWKS().Marshal()
	f.Add(good)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"","kid":""}]}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseJWKS(data)
		if err != nil {
			return
		}
		for _, k := range set.Keys {
			pub, ok := set.PublicKey(k.Kid)
			if !ok || Thumbprint(pub) != k.Kid {
				t.Fatalf("key %q resolves to a key with another thumbprint", k.Kid)
			}
		}
	})
}
