package gatewaycmd

import (
	"os"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) {
	// The end-to-end test runs this binary as the sandboxes' supervisor.
	if os.Getenv(roleEnv) == roleSupervisor {
		os.Exit(standInSupervisor())
	}
	testmain.Run(m, postgres.Stop)
}
