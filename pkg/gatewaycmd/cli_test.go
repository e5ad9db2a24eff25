package gatewaycmd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// clearAdminEnv keeps the caller's SANDKEY_* settings out of a test.
func clearAdminEnv(t *testing.T) {
	for _, name := range []string{"SANDKEY_STATE_DIR", "SANDKEY_ADMIN", "SANDKEY_ADMIN_TOKEN_FILE", "SANDKEY_ADMIN_CA"} {
		t.Setenv(name, "")
	}
}

// runCLI runs the gateway command line and returns its exit code, stdout
// and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCLIRefusesBadArgumentsBeforeCallingTheGateway(t *testing.T) {
	clearAdminEnv(t)
	// No gateway runs here: an argument that got past validation would
	// fail with "no gateway is running" and ExitFailure instead.
	state := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"create without a name", []string{"sandbox", "create"}, "missing NAME"},
		{"create with only a command", []string{"sandbox", "create", "--", "sleep", "1"}, "missing NAME"},
		{"create without a command", []string{"sandbox", "create", "web"}, "no command given"},
		{"create with an empty command after --", []string{"sandbox", "create", "web", "--"}, "no command given"},
		{"create with two names", []string{"sandbox", "create", "a", "b", "--", "sleep", "1"}, "expected one NAME before --"},
		{"env without =", []string{"sandbox", "create", "web", "--env", "MODE", "--", "true"}, `"MODE": want KEY=VALUE`},
		{"env with a bad name", []string{"sandbox", "create", "web", "-e", "1X=y", "--", "true"}, "not a variable name"},
		{"env reserved for sandkey", []string{"sandbox", "create", "web", "-e", "SANDKEY_SANDBOX_ID=other", "--", "true"}, "set by the gateway"},
		{"unknown output format", []string{"-o", "yaml", "sandbox", "list"}, `unknown output format "yaml"`},
		{"get without a sandbox", []string{"sandbox", "get"}, "missing sandbox"},
		{"start with two sandboxes", []string{"sandbox", "start", "a", "b"}, "takes one sandbox"},
		{"list with an operand", []string{"sandbox", "list", "web"}, "takes no arguments"},
		{"exec without a command", []string{"sandbox", "exec", "web"}, "no command given"},
		{"exec with a bad env entry", []string{"sandbox", "exec", "web", "-e", "=x", "--", "true"}, "not a variable name"},
		{"exec with a negative timeout", []string{"sandbox", "exec", "web", "--timeout", "-1s", "--", "true"}, "negative"},
		{"exec with both -i and --stdin", []string{"sandbox", "exec", "-i", "--stdin", "web", "--", "cat"}, "choose one"},
		{"logs without a sandbox", []string{"sandbox", "logs", "-f"}, "missing sandbox"},
		{"unknown sandbox command", []string{"sandbox", "frob"}, `unknown command "frob"`},
		{"unknown keys command", []string{"keys", "frob"}, `unknown command "frob"`},
		{"keys rotate with an operand", []string{"keys", "rotate", "now"}, "takes no arguments"},
		{"unknown flag", []string{"sandbox", "list", "--frob"}, "unknown flag"},
		{"admin neither a path nor host:port", []string{"--admin", "bogus", "sandbox", "list"}, `--admin "bogus"`},
		{"TCP admin without a token file", []string{"--admin", "127.0.0.1:1", "sandbox", "list"}, "pass its file with --admin-token-file"},
		{"TCP admin with a missing token file", []string{"--admin", "127.0.0.1:1", "--admin-token-file", "/nonexistent/token", "sandbox", "list"},
			"--admin-token-file: read admin token file"},
		{"exec with the command's flags before --", []string{"sandbox", "exec", "web", "ls", "-la"},
			"the command's own flags go after --, as in `gateway sandbox exec NAME -- CMD ARGS...`"},
		{"create with the command's flags before --", []string{"sandbox", "create", "web", "python3", "--version"},
			"`gateway sandbox create NAME -- CMD ARGS...`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"--state-dir", state}, tt.args...)...)
			if code != ExitUsage {
				t.Errorf("exit code %d, want ExitUsage (%d); stderr: %s", code, ExitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not say %q", stderr, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestCLICreateWithAnImageNeedsNoCommand(t *testing.T) {
	clearAdminEnv(t)
	state := t.TempDir()
	// Past validation, the call fails only for want of a gateway.
	code, _, stderr := runCLI(t, "--state-dir", state, "sandbox", "create", "app", "--driver", "docker", "--image", "my/agent:1")
	if code != ExitFailure || !strings.Contains(stderr, "no gateway is running") {
		t.Errorf("exit %d, stderr %q; want the request to reach for the gateway (ExitFailure, no gateway is running)", code, stderr)
	}
}

func TestCLISaysHowToStartAGatewayWhenNoneRuns(t *testing.T) {
	clearAdminEnv(t)
	state := t.TempDir()
	sock := filepath.Join(state, AdminSocketName)
	for _, args := range [][]string{
		{"--state-dir", state, "sandbox", "list"},
		{"--admin", sock, "keys", "rotate"},
	} {
		code, _, stderr := runCLI(t, args...)
		want := "gateway: no gateway is running at " + sock + " (start one with `gateway serve`, or pass --admin)\n"
		if code != ExitFailure || stderr != want {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", args, code, stderr, ExitFailure, want)
		}
	}
}

func TestCLIFindsTheSocketOfARelativeStateDir(t *testing.T) {
	clearAdminEnv(t)
	t.Chdir(t.TempDir())
	_, _, stderr := runCLI(t, "--state-dir", "state", "sandbox", "list")
	if !strings.Contains(stderr, " at /") {
		t.Errorf("stderr %q does not name an absolute socket path", stderr)
	}
}

func TestExecRefusesStdinLargerThanOneExecCarries(t *testing.T) {
	clearAdminEnv(t)
	var stdout, stderr bytes.Buffer
	root := NewRoot(&stdout, &stderr)
	root.SetIn(bytes.NewReader(make([]byte, 513<<10)))
	root.SetArgs([]string{"--state-dir", t.TempDir(), "sandbox", "exec", "web", "--stdin", "--", "cat"})
	err := root.ExecuteContext(context.Background())
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "512 KiB") {
		t.Fatalf("exec with 513 KiB of stdin: %v, want a usage error naming the limit", err)
	}
}

func TestServeOnAStateDirOthersCanReadExitsAsAConfigurationError(t *testing.T) {
	clearAdminEnv(t)
	// Short: the sandbox socket paths under it are checked first.
	state, err := os.MkdirTemp("/tmp", "skmode")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "--state-dir", state, "serve", "--http-addr", "", "--supervisor", "/usr/bin/env")
	if code != ExitUsage || !strings.Contains(stderr, "chmod 700 "+state) {
		t.Fatalf("serve on a 0755 state directory: exit %d, stderr %q; want %d and the chmod to run", code, stderr, ExitUsage)
	}
}

func TestExecTTYRefusesAStdinThatIsNotATerminal(t *testing.T) {
	clearAdminEnv(t)
	var stdout, stderr bytes.Buffer
	root := NewRoot(&stdout, &stderr)
	root.SetIn(strings.NewReader("echo hi\n"))
	root.SetArgs([]string{"--state-dir", t.TempDir(), "sandbox", "exec", "-it", "web", "--", "sh"})
	err := root.ExecuteContext(context.Background())
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "use -i alone") {
		t.Fatalf("exec -it with a pipe as stdin: %v, want a usage error that says to use -i", err)
	}
}
