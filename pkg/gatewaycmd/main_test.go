package gatewaycmd

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The end-to-end test runs this binary as the sandboxes' supervisor.
	if os.Getenv(roleEnv) == roleSupervisor {
		os.Exit(standInSupervisor())
	}
	code := m.Run()
	if err := postgres.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop postgres: %v\n", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
