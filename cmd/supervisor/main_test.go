package main

import (
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) { testmain.Run(m, func() error { return nil }) }

func TestHelpExitsZero(t *testing.T) {
	var errb strings.Builder
	if code := run([]string{"--help"}, &errb); code != 0 || !strings.Contains(errb.String(), "--grace") {
		t.Fatalf("supervisor --help exited %d, printed %q; want 0 and the flags", code, errb.String())
	}
}

// Settings that do not parse or make no sense end the supervisor before
// it runs anything, with EX_USAGE: a driver's typo never runs a sandbox on
// a setting nobody asked for. (Without a sandbox id, anything that got
// past them would exit EX_CONFIG.)
func TestBadSettingsExitAsUsageBeforeRunningAnything(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"grace variable not a duration", map[string]string{"SANDKEY_GRACE": "soon"}, nil, `SANDKEY_GRACE="soon"`},
		{"poll variable not a duration", map[string]string{"SANDKEY_POLL_INTERVAL": "often"}, nil, `SANDKEY_POLL_INTERVAL="often"`},
		{"negative grace", nil, []string{"--grace", "-1s"}, "--grace -1s"},
		{"negative poll interval", nil, []string{"--poll-interval", "-1s"}, "--poll-interval -1s"},
		{"unknown vm-init", nil, []string{"--vm-init", "maybe"}, "--vm-init"},
		// pflag itself says nothing of a flag it refuses.
		{"unknown flag", nil, []string{"--version"}, "unknown flag: --version"},
		{"flag value that does not parse", nil, []string{"--grace", "x"}, "--grace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SANDKEY_SANDBOX_ID", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var errb strings.Builder
			if code := run(append(tt.args, "--", "true"), &errb); code != supervisor.ExitUsage {
				t.Fatalf("exit %d, want %d (EX_USAGE); stderr %q", code, supervisor.ExitUsage, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q does not name %q", errb.String(), tt.want)
			}
		})
	}
}
