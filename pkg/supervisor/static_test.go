package supervisor

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/guest"
)

// mintToken mints a real token for sandboxID, issued at issuedAt, valid
// for an hour.
func mintToken(t *testing.T, sandboxID string, gen uint64, issuedAt time.Time) *auth.Token {
	t.Helper()
	key, err := auth.GenerateKey(rand.Reader, issuedAt)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Keys: auth.NewKeySet(key), Issuer: "https://gateway.test", Audience: "sandkey",
		TrustDomain: "test.sandkey", Lifetime: time.Hour, Now: func() time.Time { return issuedAt }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := issuer.Mint(sandboxID, gen)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestStaticSourcePresentsTheTokenFromTheEnvironmentOrAFile(t *testing.T) {
	tok := mintToken(t, "sb", 3, time.Now())
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok.Raw()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"SANDKEY_TOKEN":      {Mode: guest.ModeStatic, SandboxID: "sb", StaticToken: tok.Raw()},
		"SANDKEY_TOKEN_FILE": {Mode: guest.ModeStatic, SandboxID: "sb", TokenFile: file},
	} {
		t.Run(name, func(t *testing.T) {
			src, err := newStaticSource(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if got := src.Current(); got == nil || got.JTI() != tok.JTI() {
				t.Fatalf("Current = %v, want the token of jti %s", got, tok.JTI())
			}
			md, err := src.PerRPCCredentials().GetRequestMetadata(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if md["authorization"] != "Bearer "+tok.Raw() {
				t.Error("the call credentials do not send the static token as a bearer")
			}
		})
	}
}

func TestStaticSourceRefusesATokenItCannotPresent(t *testing.T) {
	other := mintToken(t, "sb-other", 1, time.Now())
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"another sandbox's token", Config{SandboxID: "sb", StaticToken: other.Raw()}, `for sandbox "sb-other", not "sb"`},
		{"not a token", Config{SandboxID: "sb", StaticToken: "not-a-jwt"}, "static token"},
		{"missing file", Config{SandboxID: "sb", TokenFile: filepath.Join(t.TempDir(), "missing")}, "static token file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newStaticSource(tc.cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Code != ExitConfig {
				t.Fatalf("err = %v, want a configuration error (exit %d)", err, ExitConfig)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestStaticSourceTakesNoNewTokensAndItsFeedNeverSends(t *testing.T) {
	tok := mintToken(t, "sb", 1, time.Now())
	src, err := newStaticSource(Config{SandboxID: "sb", StaticToken: tok.Raw()})
	if err != nil {
		t.Fatal(err)
	}
	newer := mintToken(t, "sb", 2, time.Now())
	if err := src.Offer(newer.Raw(), nil, ""); err == nil {
		t.Error("Offer succeeded: a static source must refuse new tokens")
	}
	src.MarkRejected()
	if got := src.Current(); got.JTI() != tok.JTI() {
		t.Errorf("Current changed to jti %s after Offer and MarkRejected", got.JTI())
	}
	feed, cancel := src.Subscribe()
	defer cancel()
	select {
	case got := <-feed:
		t.Errorf("the feed sent %v", got)
	case <-time.After(20 * time.Millisecond):
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}
