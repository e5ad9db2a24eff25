package session

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/sandkey/sandkey/pkg/auth"
)

// testSource stands in for pkg/auth/source where a test needs a source
// that misbehaves: once refuseAll is set, it refuses every offer.
type testSource struct {
	sandboxID string
	verifier  auth.Verifier

	mu        sync.Mutex
	cur       *auth.Token
	refuseAll bool
}

func newTestSource(sandboxID string, v *auth.Verifier) *testSource {
	return &testSource{sandboxID: sandboxID, verifier: *v}
}

func (s *testSource) Current() *auth.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *testSource) Offer(raw string, _ []byte, origin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuseAll {
		return fmt.Errorf("offer from %s: refusing everything", origin)
	}
	tok, err := s.verifier.Verify(raw, s.sandboxID)
	if err != nil {
		return fmt.Errorf("offer from %s: %w", origin, err)
	}
	s.cur = tok
	return nil
}

func (s *testSource) MarkRejected() {}

func (s *testSource) PerRPCCredentials() credentials.PerRPCCredentials { return bearerCreds{s} }

type bearerCreds struct{ s *testSource }

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	t := b.s.Current()
	if t == nil {
		return nil, fmt.Errorf("no token")
	}
	return map[string]string{"authorization": "Bearer " + t.Raw()}, nil
}

func (b bearerCreds) RequireTransportSecurity() bool { return false }
