package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkey/sandkey/pkg/auth"
)

// Authority is what the session server needs from the gateway's store and
// issuer. The gateway implements it; sessiontest.MemAuthority serves tests.
type Authority interface {
	// Latest returns the newest minted token of sandboxID, or an error
	// wrapping ErrUnknownSandbox.
	Latest(ctx context.Context, sandboxID string) (*auth.Token, error)
	// Authenticate verifies raw for sandboxID: signature, claims, the
	// sandbox is known (else ErrUnknownSandbox), and the generation is one
	// of the two newest, with the jti it was issued with. Once the
	// signature verified, an older generation is ErrSuperseded, and a
	// generation the gateway never issued with that jti (newer than the
	// latest, or another jti, as after a store restored from backup) is a
	// *NotIssuedError. allowExpired skips exp and nbf; the server sets it
	// only on attested channels. Other failures wrap an *auth.VerifyError
	// or ErrUnauthenticated; anything else is taken as a fault of the
	// gateway, not of the caller.
	Authenticate(ctx context.Context, raw, sandboxID string, allowExpired bool) (*auth.Token, error)
	// Reissue returns an unexpired token of sandboxID whose generation is
	// above `above`: the latest when it is, or else a new generation,
	// numbered above `above` and above anything else the authority knows
	// the sandbox has seen, and committed before it is returned. The server
	// calls it on an attested channel for a token that is not issued, so
	// that a sandbox holding generations its gateway forgot is answered
	// with one that was never issued before. Errors as for Latest.
	Reissue(ctx context.Context, sandboxID string, above uint64) (*auth.Token, error)
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
	// ErrNotIssued means a token verified (signature, claims, sandbox) but
	// is not a generation the gateway issued with that jti: its store was
	// restored from an older backup, or its key leaked. Errors wrapping it
	// are *NotIssuedError.
	ErrNotIssued = errors.New("token generation was not issued by this gateway's store")
	// ErrUnauthenticated means a call carried no valid credential.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrNotConnected means a sandbox has no session.
	ErrNotConnected = errors.New("sandbox has no session")
	// ErrSessionEnded means a session ended while a call on it was pending.
	ErrSessionEnded = errors.New("session ended")
	// ErrServerClosed means the session server was closed.
	ErrServerClosed = errors.New("session server closed")
)

// NotIssuedError is Authenticate's refusal of a token that verified but
// was never issued. Token is the verified token: its generation shows how
// far the sandbox had come.
type NotIssuedError struct {
	Token  *auth.Token
	Reason string // what the authority found, for the log
}

func (e *NotIssuedError) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.Token, e.Reason, ErrNotIssued)
}

// Unwrap makes errors.Is(err, ErrNotIssued) hold.
func (e *NotIssuedError) Unwrap() error { return ErrNotIssued }

// isCallerFault reports whether an Authenticate error is the caller's
// (a bad or unwanted credential) rather than the gateway's.
func isCallerFault(err error) bool {
	var ve *auth.VerifyError
	return errors.As(err, &ve) || errors.Is(err, ErrUnknownSandbox) ||
		errors.Is(err, ErrSuperseded) || errors.Is(err, ErrNotIssued) || errors.Is(err, ErrUnauthenticated)
}
