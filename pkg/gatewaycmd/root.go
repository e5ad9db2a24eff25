// Package gatewaycmd is the gateway's command line: `gateway serve` runs
// the control plane; `gateway sandbox ...` and `gateway keys ...` drive a
// running one through its operator API.
package gatewaycmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandkey/sandkey/pkg/gateway"
)

// Exit codes of the gateway binary.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the operation failed
	ExitUsage    = 2 // bad flags, arguments or configuration
	ExitNotFound = 3 // the named sandbox does not exist
)

// usageError marks errors that come from what the user typed.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Usagef returns an error that exits with ExitUsage.
func Usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// globals are the flags every command shares.
type globals struct {
	stateDir   string // --state-dir, SANDKEY_STATE_DIR
	adminAddr  string // --admin, SANDKEY_ADMIN: unix socket path or tcp host:port of a running gateway
	adminToken string // --admin-token-file, SANDKEY_ADMIN_TOKEN_FILE: bearer for TCP admin
	adminCA    string // --admin-ca, SANDKEY_ADMIN_CA: CA bundle for TLS admin
	output     string // -o: table | wide | json
	stdout     io.Writer
	stderr     io.Writer
}

// DefaultStateDir is where the gateway keeps its state unless told
// otherwise: /var/lib/sandkey for root, ~/.local/state/sandkey otherwise.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/sandkey"
	}
	if dir, err := os.UserHomeDir(); err == nil {
		return filepath.Join(dir, ".local", "state", "sandkey")
	}
	return "sandkey-state"
}

// AdminSocketName is the operator API socket's name in the state directory.
const AdminSocketName = "admin.sock"

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// NewRoot builds the gateway command tree.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "gateway",
		Short:         "sandkey gateway: fresh short-lived credentials for every sandbox",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without a command: help; with an unknown one: a usage error
		// (cobra's own "unknown command" would exit 1).
		Args: cobra.ArbitraryArgs,
		RunE: unknownSubcommand,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", envOr("SANDKEY_STATE_DIR", DefaultStateDir()), "state directory (env SANDKEY_STATE_DIR)")
	pf.StringVar(&g.adminAddr, "admin", envOr("SANDKEY_ADMIN", ""), "operator API of a running gateway: a unix socket path, or host:port for TLS (env SANDKEY_ADMIN; default <state-dir>/admin.sock)")
	pf.StringVar(&g.adminToken, "admin-token-file", envOr("SANDKEY_ADMIN_TOKEN_FILE", ""), "file holding the admin bearer token for a TCP operator API (env SANDKEY_ADMIN_TOKEN_FILE; default: none, required with a host:port --admin)")
	pf.StringVar(&g.adminCA, "admin-ca", envOr("SANDKEY_ADMIN_CA", ""), "CA bundle that signed the TCP operator API's certificate (env SANDKEY_ADMIN_CA; default: the system roots)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, wide (sandbox lists add the replica holding each session) or json")
	root.AddCommand(newServeCommand(g), newSandboxCommand(g), newKeysCommand(g), newVMKrunRunCommand())
	return root
}

// Main runs the gateway command line and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(flagError)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	// `sandbox exec` ends with its command's own status.
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "gateway: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue), isConfigError(err):
		return ExitUsage
	case isNotFound(err):
		return ExitNotFound
	}
	return ExitFailure
}

// flagError is a flag the command line refused. For the commands that run
// a command, the likeliest cause is the command's own flags given without
// -- (exec web ls -la), so it says where they go.
func flagError(cmd *cobra.Command, err error) error {
	if (cmd.Name() == "exec" || cmd.Name() == "create") && strings.HasPrefix(err.Error(), "unknown") {
		return Usagef("%v: the command's own flags go after --, as in `%s NAME -- CMD ARGS...`", err, cmd.CommandPath())
	}
	return usageError{err}
}

// isConfigError reports whether err is a setting the operator must fix
// before the gateway can start (a state directory, database or key file
// others can read; a key file that does not decrypt the keys): exit 2, as
// for any configuration error, not 1.
func isConfigError(err error) bool {
	return errors.Is(err, gateway.ErrInsecure) || errors.Is(err, gateway.ErrWrongKeyFile)
}
