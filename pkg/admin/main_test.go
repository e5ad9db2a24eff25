package admin

import (
	"testing"

	"github.com/sandkey/sandkey/test/binaries"
)

// The forwarding tests run real gateways whose process driver starts the
// real supervisor binary; RunTests builds it, and checks for leaked
// goroutines once the tests have ended.
func TestMain(m *testing.M) { binaries.RunTests(m) }
