package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// The JWT benchmarks run beside raw Ed25519 so the report can give the
// ratio: what the JWT encoding costs over the signature itself.

// signingInput returns the bytes a real token signs, so the raw reference
// hashes exactly as much as the JWT path does.
func signingInput(b *testing.B) []byte {
	f := newFixture(b)
	tok, _ := f.issuer.Mint("sb-1", 1)
	raw := tok.Raw()
	return []byte(raw[:strings.LastIndexByte(raw, '.')])
}

func BenchmarkRawEd25519Sign(b *testing.B) {
	key, _ := GenerateKey(rand.Reader, t0)
	msg := signingInput(b)
	for b.Loop() {
		ed25519.Sign(key.Private, msg)
	}
}

func BenchmarkMint(b *testing.B) {
	f := newFixture(b)
	for b.Loop() {
		if _, err := f.issuer.Mint("sb-1", 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519Verify(b *testing.B) {
	key, _ := GenerateKey(rand.Reader, t0)
	msg := signingInput(b)
	sig := ed25519.Sign(key.Private, msg)
	for b.Loop() {
		if !ed25519.Verify(key.Public, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	tok, _ := f.issuer.Mint("sb-1", 1)
	v := f.verifier()
	v.Now = func() time.Time { return t0 }
	for b.Loop() {
		if _, err := v.Verify(tok.Raw(), "sb-1"); err != nil {
			b.Fatal(err)
		}
	}
}
