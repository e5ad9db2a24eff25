// Package testmain ends the test binary of a package whose tests share
// what its TestMain made (built binaries, container engines, a guest
// image): it runs the tests, then the cleanup, and only then looks for
// leaked goroutines, since the cleanup is what ends the shared parts'.
package testmain

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Run runs m's tests, then cleanup, and exits: with the tests' code, 1 if
// cleanup failed, or 1 if a passing run leaked goroutines.
func Run(m *testing.M, cleanup func() error) {
	code := m.Run()
	if err := cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
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

// SkipIfMissing ends t for err, the policy of every harness of real
// parts: a skip when missing says that something the test needs is not
// installed (or not permitted), on a developer's machine; a failure
// otherwise, and always under CI=true, where a test must never pass by
// skipping.
func SkipIfMissing(t testing.TB, err error, missing bool) {
	t.Helper()
	if missing && os.Getenv("CI") != "true" {
		t.Skipf("skipping: %v", err)
	}
	t.Fatal(err)
}
