package gatewaycmd

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The end-to-end test runs this binary as the sandboxes' supervisor.
	if os.Getenv(roleEnv) == roleSupervisor {
		os.Exit(standInSupervisor())
	}
	goleak.VerifyTestMain(m)
}
