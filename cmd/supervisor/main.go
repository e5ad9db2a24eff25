// Command supervisor is PID 1 in every sandbox: it runs the workload,
// keeps the sandbox's token fresh, and keeps its session with the gateway.
//
//	supervisor [flags] -- command args...
//	supervisor --copy-to DEST
//
// Every flag has a SANDKEY_* environment variable, which the sandbox's
// driver sets; flags win.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/logging"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/pkg/supervisor/vminit"
)

func main() {
	if !vminit.NeedsInit() {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	// The init of a microVM: the VM driver's boot file gives its
	// environment and arguments, and the VM powers off when it is done.
	args, vm, err := vminit.StartGuest(guest.BootFile, os.Args[1:])
	code := supervisor.ExitConfig
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
	} else {
		code = run(args, os.Stderr)
	}
	vm.Finish()
	if err := vminit.Halt(code); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
	}
	os.Exit(code)
}

// run is the supervisor's command line: its exit code; its own messages
// go to stderr.
func run(args []string, stderr io.Writer) int {
	var o supervisor.Options
	fs, err := supervisor.NewFlags(&o)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return supervisor.ExitUsage
	}
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		// pflag prints nothing of its own with ContinueOnError.
		fmt.Fprintf(stderr, "supervisor: %v (see supervisor --help)\n", err)
		return supervisor.ExitUsage
	}
	cfg, copyTo := o.Config, o.CopyTo
	if copyTo != "" {
		if err := supervisor.CopySelf(copyTo); err != nil {
			fmt.Fprintf(stderr, "supervisor: --copy-to: %v\n", err)
			return supervisor.ExitSoftware
		}
		return 0
	}
	for name, d := range map[string]time.Duration{"grace": cfg.Grace, "poll-interval": cfg.PollInterval} {
		if d < 0 {
			fmt.Fprintf(stderr, "supervisor: --%s %s: may not be negative\n", name, d)
			return supervisor.ExitUsage
		}
	}
	cfg.Argv = fs.Args()
	cfg.StaticToken = os.Getenv(guest.EnvToken)
	cfg.GatewayCA = os.Getenv(guest.EnvGatewayCA)
	switch cfg.VMInit {
	case "auto", "on", "off":
	default:
		fmt.Fprintf(stderr, "supervisor: --vm-init %q: want auto, on or off\n", cfg.VMInit)
		return supervisor.ExitUsage
	}
	log, err := logging.New(o.LogLevel, o.LogFormat)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return supervisor.ExitUsage
	}
	defer log.Sync()
	log = log.With(zap.String("sandbox", cfg.SandboxID))

	// Signals are the workload runner's: it forwards them and, on SIGTERM,
	// stops the workload after the grace; its exit then ends the supervisor.
	return supervisor.Run(context.Background(), cfg, log)
}
