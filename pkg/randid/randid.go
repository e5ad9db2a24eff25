// Package randid makes sandkey's random identifiers (token jtis, session
// ids, instance ids, bearer tokens of test clusters): bytes from
// crypto/rand, hex-encoded, so that no id can be guessed from another.
package randid

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns n random bytes from crypto/rand as 2n lower-case hex
// characters.
func New(n int) string {
	b := make([]byte, n)
	// Never fails: since Go 1.24 crypto/rand crashes the program rather
	// than return an error, so no id is ever made of guessable bytes.
	rand.Read(b)
	return hex.EncodeToString(b)
}
