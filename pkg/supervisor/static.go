package supervisor

import (
	"errors"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/bearer"
)

// staticSource is the token source of auth mode static: one token, read
// once, never refreshed. It cannot verify the token (it has no keys), so
// it only presents it. It has the whole interface of a token source, so
// the supervisor runs the same way in every mode: its change feed never
// sends, since its token never changes.
type staticSource struct{ tok *auth.Token }

var _ tokenSource = (*staticSource)(nil)

func newStaticSource(cfg Config) (*staticSource, error) {
	raw := cfg.StaticToken
	if cfg.TokenFile != "" {
		data, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, configErr(ExitConfig, "static token file: %v", err)
		}
		raw = strings.TrimSpace(string(data))
	}
	tok, err := auth.ParseUnverified(raw)
	if err != nil {
		return nil, configErr(ExitConfig, "static token: %v", err)
	}
	if tok.SandboxID() != cfg.SandboxID {
		return nil, configErr(ExitConfig, "static token is for sandbox %q, not %q", tok.SandboxID(), cfg.SandboxID)
	}
	return &staticSource{tok: tok}, nil
}

func (s *staticSource) Current() *auth.Token { return s.tok }

func (s *staticSource) Offer(string, []byte, string) error {
	return errors.New("auth mode static takes no new tokens")
}

func (s *staticSource) MarkRejected() {}

func (s *staticSource) PerRPCCredentials() credentials.PerRPCCredentials {
	return bearer.Credentials{Token: bearer.Fixed(s.tok.Raw())}
}

// Subscribe returns a feed that never sends: the token never changes.
func (s *staticSource) Subscribe() (<-chan *auth.Token, func()) {
	return make(chan *auth.Token), func() {}
}

// Close does nothing: the source holds no watch and no goroutine.
func (s *staticSource) Close() error { return nil }
