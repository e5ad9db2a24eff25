package gatewaycmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
)

// newSandboxCommand is `gateway sandbox ...`: the sandboxes of a running
// gateway, through its operator API.
func newSandboxCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sandboxes"},
		Short:   "Create, inspect, run and delete the sandboxes of a running gateway",
		Args:    cobra.ArbitraryArgs,
		RunE:    unknownSubcommand,
	}
	cmd.AddCommand(
		newSandboxCreateCommand(g),
		newSandboxListCommand(g),
		newSandboxGetCommand(g),
		newSandboxStartCommand(g),
		newSandboxStopCommand(g),
		newSandboxDeleteCommand(g),
		newSandboxRotateCommand(g),
		newSandboxExecCommand(g),
		newSandboxLogsCommand(g),
	)
	return cmd
}

// unknownSubcommand is the RunE of a command group: without a
// subcommand it shows help; with an unknown one it is a usage error
// (cobra alone would show help and succeed).
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	return Usagef("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())
}

func newSandboxCreateCommand(g *globals) *cobra.Command {
	var (
		drv, image string
		env        []string
		start      bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME [--driver D] [--image I] [--env K=V]... [--start] [-- CMD ARGS...]",
		Short: "Create a sandbox that runs CMD ARGS under its supervisor",
		Long: `Create a sandbox that runs CMD ARGS under its supervisor. With --image,
CMD ARGS may be left out: the sandbox runs what the image would run (its
ENTRYPOINT and CMD). Any local image works with the docker and podman
drivers; the gateway mounts its supervisor into images that lack one.

NAME is 1-63 letters, digits, '.', '_' or '-', starting with a letter or
digit, and not of a sandbox id's form (32 lower-case hex digits): every
command takes a sandbox's id or its name.`,
		Example: `  gateway sandbox create web --start -- python3 -m http.server 8080
  gateway sandbox create job --driver docker --image busybox -e MODE=batch --start -- sh -c 'echo "mode $MODE"; sleep 3600'
  gateway sandbox create app --driver podman --image my-team/agent:1.4 --start`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, command, err := operandAndCommand(cmd, args, "NAME", image == "")
			if err != nil {
				return err
			}
			envMap, err := parseEnv(env)
			if err != nil {
				return err
			}
			req := &adminpb.CreateSandboxRequest{Name: name, Driver: drv, Image: image, Command: command, Env: envMap, Start: start}
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				sb, err := c.CreateSandbox(ctx, req)
				if err != nil {
					return err
				}
				return printSandbox(g.stdout, g.output, sb, time.Now())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&drv, "driver", "", "compute driver (default: the gateway's default driver)")
	f.StringVar(&image, "image", "", "container or VM image, for drivers that run images (default: none)")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE of the workload (repeatable; default: none)")
	f.BoolVar(&start, "start", false, "start the sandbox right after creating it")
	return cmd
}

func newSandboxListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sandboxes with their state and token generations",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListSandboxes(ctx, &adminpb.ListSandboxesRequest{})
				if err != nil {
					return err
				}
				return printSandboxes(g.stdout, g.output, resp.GetSandboxes(), time.Now())
			})
		},
	}
}

func newSandboxGetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID|NAME",
		Short: "Show everything about one sandbox",
		Args:  oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				sb, err := c.GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: args[0]})
				if err != nil {
					return err
				}
				return printSandboxDetail(g.stdout, g.output, sb, time.Now())
			})
		},
	}
}

func newSandboxStartCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "start ID|NAME",
		Short: "Start or resume a sandbox on a freshly minted token",
		Args:  oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				sb, err := c.StartSandbox(ctx, &adminpb.StartSandboxRequest{Sandbox: args[0]})
				if err != nil {
					return err
				}
				return printSandbox(g.stdout, g.output, sb, time.Now())
			})
		},
	}
}

func newSandboxStopCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stop ID|NAME",
		Short: "Stop a sandbox, keeping it for a later start",
		Args:  oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				sb, err := c.StopSandbox(ctx, &adminpb.StopSandboxRequest{Sandbox: args[0]})
				if err != nil {
					return err
				}
				return printSandbox(g.stdout, g.output, sb, time.Now())
			})
		},
	}
}

func newSandboxDeleteCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID|NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a sandbox and revoke every token it had",
		Args:    oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				if _, err := c.DeleteSandbox(ctx, &adminpb.DeleteSandboxRequest{Sandbox: args[0]}); err != nil {
					return err
				}
				return printResult(g.stdout, g.output,
					fmt.Sprintf("Deleted sandbox %s; its tokens are revoked.", args[0]),
					struct {
						Sandbox string `json:"sandbox"`
						Deleted bool   `json:"deleted"`
					}{args[0], true})
			})
		},
	}
}

func newSandboxRotateCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate ID|NAME",
		Short: "Mint a new token generation for a sandbox now",
		Long: `Mint a new token generation for a sandbox now. The token is written into
the sandbox's token directory and pushed over its session. If the directory
write fails but the supervisor acknowledges the token over its session, the
sandbox holds it: rotate says so on stderr and exits 0. It exits 1 only when
the token reached the sandbox nowhere.`,
		Args: oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.RotateSandbox(ctx, &adminpb.RotateSandboxRequest{Sandbox: args[0]})
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("Sandbox %s: minted token generation %d.", args[0], resp.GetGen())
				if !resp.GetWritten() {
					fmt.Fprintf(g.stderr, "gateway: sandbox %s: writing generation %d into the token directory failed (%s); "+
						"the supervisor holds it, delivered over its session. The directory keeps the previous token until a write succeeds: check the gateway's log.\n",
						args[0], resp.GetGen(), resp.GetWriteError())
					msg = fmt.Sprintf("Sandbox %s: minted token generation %d; delivered over the session (the directory write failed).", args[0], resp.GetGen())
				}
				return printResult(g.stdout, g.output, msg,
					struct {
						Sandbox    string `json:"sandbox"`
						Gen        uint64 `json:"gen"`
						Written    bool   `json:"written"`
						Delivered  bool   `json:"delivered"`
						WriteError string `json:"write_error,omitempty"`
					}{args[0], resp.GetGen(), resp.GetWritten(), resp.GetDelivered(), resp.GetWriteError()})
			})
		},
	}
}

func newSandboxExecCommand(g *globals) *cobra.Command {
	var (
		stdin, interactive, tty bool
		env                     []string
		timeout                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exec ID|NAME [-i] [-t] [--stdin] [-e K=V]... [--timeout D] -- CMD ARGS...",
		Short: "Run a command in a running sandbox; exits with the command's status",
		Long: `Run a command in a running sandbox through its supervisor. The command's
stdout and stderr are streamed to this terminal's, and gateway exits with the
command's exit status (128+N when a signal N killed it, 127 when it is not
there, 126 when it cannot run).

With -i, this command's standard input is streamed to the command as it comes,
without limit, until it ends. With -t, the supervisor runs the command on a
pseudo-terminal in the sandbox and this terminal is put in raw mode (restored
on exit): keys, Ctrl-C and Ctrl-D go to the command, window size changes
follow, and $TERM is passed on. Use -it for a shell. With --stdin, standard
input is read to its end first and sent in one piece (at most 512 KiB).

Ending this command (or losing its connection) kills the command's process
group in the sandbox; a sandbox whose session drops ends its commands.`,
		Example: `  gateway sandbox exec -it web -- sh
  gateway sandbox exec web -- cat /run/sandkey/auth/token
  tar c . | gateway sandbox exec -i web -- tar x -C /work
  echo hello | gateway sandbox exec web --stdin -- tr a-z A-Z`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, argv, err := operandAndCommand(cmd, args, "ID|NAME", true)
			if err != nil {
				return err
			}
			for _, kv := range env {
				if _, _, err := parseEnvEntry(kv); err != nil {
					return err
				}
			}
			if timeout < 0 {
				return Usagef("--timeout %s is negative", timeout)
			}
			if stdin && interactive {
				return Usagef("--stdin and -i both send stdin: -i streams it, --stdin sends it in one piece; choose one")
			}
			req := &adminpb.ExecSandboxRequest{Sandbox: ref, Argv: argv, Env: env}
			if timeout > 0 {
				req.Timeout = durationpb.New(timeout)
			}
			if interactive || tty {
				return execHint(execInteractive(cmd.Context(), g, req, interactive, tty, cmd.InOrStdin()), ref)
			}
			if stdin {
				if req.Stdin, err = readStdin(cmd.InOrStdin()); err != nil {
					return err
				}
				req.HasStdin = true
			}
			return execHint(withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				return runExec(ctx, c, req, g.stdout, g.stderr)
			}), ref)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&stdin, "stdin", false, "read this command's standard input to its end and send it to the command in one piece")
	f.BoolVarP(&interactive, "interactive", "i", false, "stream this command's standard input to the command as it comes")
	f.BoolVarP(&tty, "tty", "t", false, "run the command on a terminal in the sandbox, this terminal in raw mode")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE added for the command (repeatable; default: none)")
	f.DurationVar(&timeout, "timeout", 0, "kill the command if it runs longer (default 0: no limit)")
	return cmd
}

// execHint says what to look at when the gateway cannot run an exec in
// sandbox ref: no session (a stopped sandbox, a supervisor that does not
// connect) or one that cannot exec.
func execHint(err error, ref string) error {
	var re *remoteError
	if !errors.As(err, &re) || re.code != codes.FailedPrecondition {
		return err
	}
	return &remoteError{code: re.code, msg: fmt.Sprintf("%s (is it running? `gateway sandbox get %s` shows its state and session, `gateway sandbox start %s` starts a stopped one, `gateway sandbox logs %s` shows its supervisor's log)",
		re.msg, ref, ref, ref)}
}

// runExec streams an exec's output to stdout and stderr and returns its
// exit status as a commandExit (nil for status 0).
func runExec(ctx context.Context, c adminpb.AdminClient, req *adminpb.ExecSandboxRequest, stdout, stderr io.Writer) error {
	stream, err := c.ExecSandbox(ctx, req)
	if err != nil {
		return err
	}
	return printExecOutput(stream.Recv, req, stdout, stderr)
}

// printExecOutput writes an exec's output as recv returns it and returns
// its exit status as a commandExit (nil for status 0).
func printExecOutput(recv func() (*adminpb.ExecSandboxResponse, error), req *adminpb.ExecSandboxRequest, stdout, stderr io.Writer) error {
	for {
		msg, err := recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("exec %s in sandbox %s: the gateway ended the output without an exit status", req.Argv[0], req.Sandbox)
		}
		if err != nil {
			return err
		}
		switch d := msg.GetData().(type) {
		case *adminpb.ExecSandboxResponse_Stdout:
			if _, err := stdout.Write(d.Stdout); err != nil {
				return fmt.Errorf("write the command's stdout: %w", err)
			}
		case *adminpb.ExecSandboxResponse_Stderr:
			if _, err := stderr.Write(d.Stderr); err != nil {
				return fmt.Errorf("write the command's stderr: %w", err)
			}
		case *adminpb.ExecSandboxResponse_Exit:
			if msg := d.Exit.GetError(); msg != "" {
				fmt.Fprintf(stderr, "gateway: exec %s in sandbox %s: %s\n", req.Argv[0], req.Sandbox, msg)
			}
			if code := int(d.Exit.GetCode()); code != 0 {
				return commandExit{code: code}
			}
			return nil
		}
	}
}

// readStdin reads all of r, refusing more than one exec can carry.
func readStdin(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, session.MaxExecStdin+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin for --stdin: %w", err)
	}
	if len(data) > session.MaxExecStdin {
		return nil, Usagef("--stdin: input is over %d KiB, the most one exec carries; copy large input into the sandbox instead", session.MaxExecStdin>>10)
	}
	return data, nil
}

// operandAndCommand splits `NAME [--] CMD ARGS...` into the one operand
// and the command after it, which may be absent unless needCommand.
func operandAndCommand(cmd *cobra.Command, args []string, operand string, needCommand bool) (string, []string, error) {
	before, after := args, []string(nil)
	if dash := cmd.ArgsLenAtDash(); dash >= 0 {
		before, after = args[:dash], args[dash:]
	} else if len(args) > 0 {
		before, after = args[:1], args[1:]
	}
	usage := fmt.Sprintf("%s %s [flags] -- CMD ARGS...", cmd.CommandPath(), operand)
	switch {
	case len(before) == 0:
		return "", nil, Usagef("missing %s: %s", operand, usage)
	case len(before) > 1:
		return "", nil, Usagef("expected one %s before --, got %q: %s", operand, before, usage)
	case len(after) == 0 && !needCommand:
		return before[0], nil, nil
	case len(after) == 0 || after[0] == "":
		return "", nil, Usagef("no command given: %s", usage)
	}
	return before[0], after, nil
}

// envName is what a portable environment variable name looks like.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseEnvEntry splits KEY=VALUE, refusing names the gateway reserves.
func parseEnvEntry(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	switch {
	case !ok:
		return "", "", Usagef("--env %q: want KEY=VALUE", kv)
	case !envName.MatchString(k):
		return "", "", Usagef("--env %q: %q is not a variable name (letters, digits and _, not starting with a digit)", kv, k)
	case strings.HasPrefix(strings.ToUpper(k), guest.EnvPrefix):
		return "", "", Usagef("--env %q: %s* variables are set by the gateway for the supervisor", kv, guest.EnvPrefix)
	}
	return k, v, nil
}

// parseEnv turns repeated --env KEY=VALUE into a map; a later value of
// the same key wins, as in a shell.
func parseEnv(entries []string) (map[string]string, error) {
	env := make(map[string]string, len(entries))
	for _, kv := range entries {
		k, v, err := parseEnvEntry(kv)
		if err != nil {
			return nil, err
		}
		env[k] = v
	}
	return env, nil
}

// oneSandbox accepts exactly one sandbox id or name.
func oneSandbox(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return Usagef("missing sandbox: %s ID|NAME", cmd.CommandPath())
	case len(args) > 1:
		return Usagef("%s takes one sandbox ID or NAME, got %d: %q", cmd.CommandPath(), len(args), args)
	}
	return nil
}

// noArgs refuses operands as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
