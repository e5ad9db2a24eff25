package main

import (
	"testing"

	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) { testmain.Run(m, func() error { return nil }) }

func TestHelpExitsZero(t *testing.T) {
	if code := run([]string{"--help"}); code != 0 {
		t.Fatalf("supervisor --help exited %d, want 0", code)
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
	}{
		{"grace variable not a duration", map[string]string{"SANDKEY_GRACE": "soon"}, nil},
		{"poll variable not a duration", map[string]string{"SANDKEY_POLL_INTERVAL": "often"}, nil},
		{"negative grace", nil, []string{"--grace", "-1s"}},
		{"negative poll interval", nil, []string{"--poll-interval", "-1s"}},
		{"unknown vm-init", nil, []string{"--vm-init", "maybe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SANDKEY_SANDBOX_ID", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if code := run(append(tt.args, "--", "true")); code != supervisor.ExitUsage {
				t.Fatalf("exit %d, want %d (EX_USAGE)", code, supervisor.ExitUsage)
			}
		})
	}
}
