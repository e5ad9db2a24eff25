package source

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// FuzzOffer offers arbitrary strings to a source holding a valid token:
// none may panic, and none may replace the token (producing a valid
// signature by chance is out of the fuzzer's reach).
func FuzzOffer(f *testing.F) {
	fx := newFixture(f)
	current := fx.mint(5)
	higher := fx.mint(6).Claims()
	active := fx.keys.Active()
	past := fx.newIssuer(fx.keys, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	seeds := []string{
		"", ".", "..", "a.b.c", "this is not a token",
		current.Raw(),
		fx.mint(4).Raw(), // older
		fx.mintWith(fx.issuer, "sb-2", 9).Raw(),
		fx.mintWith(past, sandboxID, 9).Raw(),
		forge(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, active.KID, higher),
		forge(f, jwt.SigningMethodHS256, []byte(active.Public), active.KID, higher),
		strings.Repeat("A", 70000),
	}
	for _, seed := range seeds {
		f.Add(seed)
	}
	// A discarding logger: an observer would keep every rejection of a long
	// fuzzing run in memory.
	s := fx.source(func(c *Config) { c.Dir, c.Logger = "", zap.NewNop() })
	if err := s.Offer(current.Raw(), fx.jwks(), originPush); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		s.Offer(raw, nil, originPush)
		if got := s.Current(); got != nil && got.Raw() != current.Raw() {
			t.Fatalf("offer of %.40q replaced the valid token with %s", raw, got)
		}
	})
}
