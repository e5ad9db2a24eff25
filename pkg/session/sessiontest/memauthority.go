// Package sessiontest provides stand-ins for tests of the session protocol
// and its users, as net/http/httptest does for net/http. Only tests import
// it (TestOnlyTestsImportIt checks the commands).
package sessiontest

import (
	"context"
	"fmt"
	"sync"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session"
)

// MemAuthority is a session.Authority that keeps every sandbox's tokens in
// memory. It serves tests of the session package and its users; it applies
// the same rules as the gateway's store (two newest generations accepted,
// each with its jti; older ones superseded; newer ones or other jtis not
// issued; generations strictly increasing, and above every generation
// Reissue was shown; a deleted sandbox is unknown).
type MemAuthority struct {
	issuer   *auth.Issuer
	keys     *auth.KeySet
	verifier *auth.Verifier

	mu        sync.Mutex
	sandboxes map[string]*memSandbox
}

type memSandbox struct {
	latest, previous *auth.Token
	delivered        uint64
	floor            uint64 // newest generation Reissue was shown
}

// Forget deletes a sandbox: the authority knows it no more.
func (a *MemAuthority) Forget(sandboxID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sandboxes, sandboxID)
}

// NewMemAuthority returns an empty authority minting with issuer and
// verifying against keys, with the issuer's clock.
func NewMemAuthority(issuer *auth.Issuer, keys *auth.KeySet) *MemAuthority {
	v := issuer.Verifier()
	v.Keys = keys
	return &MemAuthority{issuer: issuer, keys: keys, verifier: v, sandboxes: map[string]*memSandbox{}}
}

// Mint mints the next generation for sandboxID, creating the sandbox if it
// is new, and returns it. Push it to a session with session.Server.Push.
func (m *MemAuthority) Mint(sandboxID string) (*auth.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mintLocked(sandboxID)
}

func (m *MemAuthority) mintLocked(sandboxID string) (*auth.Token, error) {
	sb := m.sandboxes[sandboxID]
	var gen uint64 = 1
	if sb != nil {
		gen = max(sb.latest.Gen(), sb.floor) + 1
	}
	tok, err := m.issuer.Mint(sandboxID, gen)
	if err != nil {
		return nil, err
	}
	if sb == nil {
		sb = &memSandbox{}
		m.sandboxes[sandboxID] = sb
	}
	sb.previous, sb.latest = sb.latest, tok
	return tok, nil
}

// Delete forgets sandboxID, revoking all its tokens.
func (m *MemAuthority) Delete(sandboxID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sandboxes, sandboxID)
}

// Delivered returns the newest generation recorded as delivered.
func (m *MemAuthority) Delivered(sandboxID string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sb := m.sandboxes[sandboxID]; sb != nil {
		return sb.delivered
	}
	return 0
}

// Latest implements session.Authority.
func (m *MemAuthority) Latest(_ context.Context, sandboxID string) (*auth.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.sandboxes[sandboxID]
	if sb == nil {
		return nil, fmt.Errorf("latest token of %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	return sb.latest, nil
}

// Authenticate implements session.Authority.
func (m *MemAuthority) Authenticate(_ context.Context, raw, sandboxID string, allowExpired bool) (*auth.Token, error) {
	verify := m.verifier.Verify
	if allowExpired {
		verify = m.verifier.VerifyIgnoringExpiry
	}
	tok, err := verify(raw, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("authenticate %s: %w", sandboxID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.sandboxes[sandboxID]
	if sb == nil {
		return nil, fmt.Errorf("authenticate %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	for _, cur := range []*auth.Token{sb.latest, sb.previous} {
		if cur != nil && cur.Gen() == tok.Gen() && cur.JTI() == tok.JTI() {
			return tok, nil
		}
	}
	if tok.Gen()+2 <= sb.latest.Gen() {
		return nil, fmt.Errorf("authenticate %s: %s (latest gen %d): %w", sandboxID, tok, sb.latest.Gen(), session.ErrSuperseded)
	}
	return nil, fmt.Errorf("authenticate %s: %w", sandboxID,
		&session.NotIssuedError{Token: tok, Reason: fmt.Sprintf("latest gen %d", sb.latest.Gen())})
}

// Reissue implements session.Authority.
func (m *MemAuthority) Reissue(_ context.Context, sandboxID string, above uint64) (*auth.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.sandboxes[sandboxID]
	if sb == nil {
		return nil, fmt.Errorf("reissue for %s: %w", sandboxID, session.ErrUnknownSandbox)
	}
	sb.floor = max(sb.floor, above)
	if sb.latest.Gen() > above && m.verifier.Now().Before(sb.latest.ExpiresAt()) {
		return sb.latest, nil
	}
	return m.mintLocked(sandboxID)
}

// RecordDelivered implements session.Authority.
func (m *MemAuthority) RecordDelivered(_ context.Context, sandboxID string, gen uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.sandboxes[sandboxID]
	if sb == nil {
		return fmt.Errorf("record delivered gen %d of %s: %w", gen, sandboxID, session.ErrUnknownSandbox)
	}
	if gen > sb.delivered {
		sb.delivered = gen
	}
	return nil
}

// JWKS implements session.Authority.
func (m *MemAuthority) JWKS() []byte {
	b, err := m.keys.JWKS().Marshal()
	if err != nil {
		// Marshalling a key set we built cannot fail; an empty set makes
		// the supervisor fall back to the keys it knows.
		return nil
	}
	return b
}
