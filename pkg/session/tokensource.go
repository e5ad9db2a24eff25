package session

import (
	"github.com/sandkey/sandkey/pkg/auth"
	"google.golang.org/grpc/credentials"
)

// TokenSource is the supervisor's token source (DESIGN.md §5), as the
// session client uses it; pkg/auth/source implements it.
type TokenSource interface {
	// Current returns the token held now, nil if none.
	Current() *auth.Token
	// Offer proposes a token that arrived from origin, verified against
	// jwks merged with the keys the source knows. It returns an error when
	// the source refuses it (an equal generation is a no-op, not an error).
	Offer(raw string, jwks []byte, origin string) error
	// MarkRejected records that the gateway refused the current token:
	// the next valid candidate wins whatever its generation.
	MarkRejected()
	// PerRPCCredentials puts the current token on every call.
	PerRPCCredentials() credentials.PerRPCCredentials
}

// Origins of the tokens the client offers to its source.
const (
	OriginSessionHello = "session-hello" // Accepted, the pull at registration
	OriginSessionPush  = "session-push"  // TokenUpdate
)
