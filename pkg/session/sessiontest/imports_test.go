package sessiontest_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTestsImportIt pins that no command links the stand-ins: the
// dependencies of the module's programs (tests excluded) hold no
// sessiontest.
func TestOnlyTestsImportIt(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/sandkey/sandkey/cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/...: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/sandkey/sandkey/pkg/session\n") {
		t.Fatalf("go list -deps ./cmd/... lists no pkg/session: the check looks at the wrong thing:\n%s", out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/sandkey/sandkey/pkg/session/sessiontest" {
			t.Errorf("a command depends on %s, a package for tests only", p)
		}
	}
}
