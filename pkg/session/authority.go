package session

import (
	"context"
	"errors"

	"github.com/sandkey/sandkey/pkg/auth"
)

// Authority is what the session server needs from the gateway's store and
// issuer. The gateway implements it; MemAuthority serves tests.
type Authority interface {
	// Latest returns the newest minted token of sandboxID, or an error
	// wrapping ErrUnknownSandbox.
	Latest(ctx context.Context, sandboxID string) (*auth.Token, error)
	// Authenticate verifies raw for sandboxID: signature, claims, the
	// sandbox is known (else ErrUnknownSandbox), and the generation is one
	// of the two newest (else ErrSuperseded, returned only once the
	// signature verified; a generation newer than the latest, as after a
	// store restored from backup, is superseded too). allowExpired skips exp and nbf; the server sets
	// it only on attested channels. Other failures wrap an *auth.VerifyError
	// or ErrUnauthenticated; anything else is taken as a fault of the
	// gateway, not of the caller.
	Authenticate(ctx context.Context, raw, sandboxID string, allowExpired bool) (*auth.Token, error)
	// RecordDelivered records that the supervisor of sandboxID holds
	// generation gen.
	RecordDelivered(ctx context.Context, sandboxID string, gen uint64) error
	// JWKS returns the gateway's public keys as a JSON Web Key Set.
	JWKS() []byte
}

var (
	// ErrUnknownSandbox means the gateway does not know the sandbox.
	ErrUnknownSandbox = errors.New("unknown sandbox")
	// ErrSuperseded means a token's generation is not one of the two newest.
	ErrSuperseded = errors.New("token generation is superseded")
	// ErrUnauthenticated means a call carried no valid credential.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrNotConnected means a sandbox has no session.
	ErrNotConnected = errors.New("sandbox has no session")
	// ErrSessionEnded means a session ended while a call on it was pending.
	ErrSessionEnded = errors.New("session ended")
	// ErrServerClosed means the session server was closed.
	ErrServerClosed = errors.New("session server closed")
)

// isCallerFault reports whether an Authenticate error is the caller's
// (a bad or unwanted credential) rather than the gateway's.
func isCallerFault(err error) bool {
	var ve *auth.VerifyError
	return errors.As(err, &ve) || errors.Is(err, ErrUnknownSandbox) ||
		errors.Is(err, ErrSuperseded) || errors.Is(err, ErrUnauthenticated)
}
