package vminit

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// helperEnv selects a helper mode: the test binary re-executes itself in
// new namespaces, where it may mount, configure interfaces and power off
// without touching the machine.
const helperEnv = "SANDKEY_VMINIT_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(mode string) int {
	switch mode {
	case "setup":
		return helperSetup()
	case "poweroff":
		return helperPowerOff()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 99
}

// requireRoot skips a test that needs root, except under CI, where it must
// run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testmain.SkipIfMissing(t, errors.New("this test needs root (namespaces): run the tests as root"), true)
}
