package badinput

import (
	"slices"
	"testing"

	"github.com/sandkey/sandkey/pkg/gatewaycmd"
)

func TestCLIRefusesBadArgumentsWithTheirExitCodeAndChangesNothing(t *testing.T) {
	l := startLive(t, "keep")
	before := l.list()
	keysBefore := l.cli("keys", "list", "-o", "json")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown command", []string{"frobnicate"}, gatewaycmd.ExitUsage, []string{`unknown command "frobnicate"`}},
		{"unknown sandbox subcommand", []string{"sandbox", "frob"}, gatewaycmd.ExitUsage, []string{`unknown command "frob"`}},
		{"unknown flag", []string{"sandbox", "list", "--bogus"}, gatewaycmd.ExitUsage, []string{"unknown flag: --bogus"}},
		{"unknown flag before the command", []string{"--bogus", "sandbox", "list"}, gatewaycmd.ExitUsage, []string{"unknown flag: --bogus"}},
		{"unknown output format", []string{"-o", "yaml", "sandbox", "list"}, gatewaycmd.ExitUsage, []string{`unknown output format "yaml"`}},
		{"operand to list", []string{"sandbox", "list", "extra"}, gatewaycmd.ExitUsage, []string{"takes no arguments"}},
		{"operand to keys rotate", []string{"keys", "rotate", "now"}, gatewaycmd.ExitUsage, []string{"takes no arguments"}},
		{"create without a name", []string{"sandbox", "create"}, gatewaycmd.ExitUsage, []string{"missing NAME"}},
		{"create without a command", []string{"sandbox", "create", "x"}, gatewaycmd.ExitUsage, []string{"no command given"}},
		{"create with two names", []string{"sandbox", "create", "x", "y", "--", "true"}, gatewaycmd.ExitUsage, []string{"expected one NAME"}},
		{"--env without =", []string{"sandbox", "create", "x", "--env", "NOVALUE", "--", "true"}, gatewaycmd.ExitUsage, []string{`--env "NOVALUE": want KEY=VALUE`}},
		{"--env with a bad name", []string{"sandbox", "create", "x", "-e", "1X=y", "--", "true"}, gatewaycmd.ExitUsage, []string{"is not a variable name"}},
		{"--env with a space in the name", []string{"sandbox", "create", "x", "-e", "A B=1", "--", "true"}, gatewaycmd.ExitUsage, []string{"is not a variable name"}},
		{"--env setting a reserved variable", []string{"sandbox", "create", "x", "-e", "SANDKEY_SANDBOX_ID=forged", "--", "true"}, gatewaycmd.ExitUsage, []string{"set by the gateway"}},
		{"bad sandbox name", []string{"sandbox", "create", "bad name!", "--", "true"}, gatewaycmd.ExitUsage, []string{"use 1-63 letters"}},
		{"unknown driver", []string{"sandbox", "create", "x", "--driver", "bogus", "--", "true"}, gatewaycmd.ExitUsage, []string{`driver "bogus" is not enabled on this gateway`, "--drivers"}},
		{"duplicate name", []string{"sandbox", "create", "keep", "--", "true"}, gatewaycmd.ExitFailure, []string{"name already taken"}},
		{"negative exec timeout", []string{"sandbox", "exec", "keep", "--timeout", "-1s", "--", "true"}, gatewaycmd.ExitUsage, []string{"negative"}},
		{"exec of a missing binary", []string{"sandbox", "exec", "keep", "--", "/nonexistent/binary"}, 127, []string{"no such file or directory"}},
		{"start a running sandbox", []string{"sandbox", "start", "keep"}, gatewaycmd.ExitFailure, []string{"already running"}},
		{"get an unknown sandbox", []string{"sandbox", "get", "nope"}, gatewaycmd.ExitNotFound, []string{`sandbox "nope": not found`}},
		{"stop an unknown sandbox", []string{"sandbox", "stop", "nope"}, gatewaycmd.ExitNotFound, []string{"not found"}},
		{"delete an unknown sandbox", []string{"sandbox", "delete", "nope"}, gatewaycmd.ExitNotFound, []string{"not found"}},
		{"rotate an unknown sandbox", []string{"sandbox", "rotate", "nope"}, gatewaycmd.ExitNotFound, []string{"not found"}},
		{"exec in an unknown sandbox", []string{"sandbox", "exec", "nope", "--", "true"}, gatewaycmd.ExitNotFound, []string{"not found"}},
		{"two sandboxes to delete", []string{"sandbox", "delete", "keep", "nope"}, gatewaycmd.ExitUsage, []string{"takes one sandbox"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runGateway(t, nil, append([]string{"--state-dir", l.state}, tc.args...)...)
			checkClearError(t, r, tc.code, tc.want...)
		})
	}
	after := l.list()
	if !slices.Equal(before, after) {
		t.Errorf("sandboxes changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if keys := l.cli("keys", "list", "-o", "json"); keys != keysBefore {
		t.Errorf("keys changed:\nbefore %s\nafter  %s", keysBefore, keys)
	}
}
