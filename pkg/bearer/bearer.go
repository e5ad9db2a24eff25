// Package bearer holds the gRPC call credentials every sandkey client
// sends: "authorization: Bearer <token>", the token read on every call.
package bearer

import (
	"context"
)

// Credentials implements credentials.PerRPCCredentials.
type Credentials struct {
	// Token returns the token to send; an error fails the call (return a
	// gRPC status to choose its code).
	Token func() (string, error)
	// RequireTLS refuses to send the token over an insecure transport.
	RequireTLS bool
}

// Fixed is a Token func for a token that never changes.
func Fixed(token string) func() (string, error) {
	return func() (string, error) { return token, nil }
}

func (c Credentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := c.Token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (c Credentials) RequireTransportSecurity() bool { return c.RequireTLS }
