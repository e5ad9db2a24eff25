package session_test

import (
	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessiontest"
)

// The tests in package session get their authority from sessiontest here,
// where importing it makes no cycle (harness_test.go says why).
func init() {
	session.NewTestAuthority = func(issuer *auth.Issuer, keys *auth.KeySet) session.TestAuthority {
		return sessiontest.NewMemAuthority(issuer, keys)
	}
}
