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
	"fmt"
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
		os.Exit(run(os.Args[1:]))
	}
	// The init of a microVM: the VM driver's boot file gives its
	// environment and arguments, and the VM powers off when it is done.
	args, vm, err := vminit.StartGuest(guest.BootFile, os.Args[1:])
	code := supervisor.ExitConfig
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
	} else {
		code = run(args)
	}
	vm.Finish()
	if err := vminit.Halt(code); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
	}
	os.Exit(code)
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func run(args []string) int {
	var cfg supervisor.Config
	var logLevel, logFormat, copyTo string
	fs := pflag.NewFlagSet("supervisor", pflag.ContinueOnError)
	fs.StringVar(&cfg.Mode, "auth-mode", env(guest.EnvAuthMode, ""), "auth mode: dir, static or k8s-sa (env "+guest.EnvAuthMode+")")
	fs.StringVar(&cfg.SandboxID, "sandbox-id", env(guest.EnvSandboxID, ""), "this sandbox's id (env "+guest.EnvSandboxID+")")
	fs.StringVar(&cfg.InstanceID, "instance-id", env(guest.EnvInstanceID, ""), "this start's instance id (env "+guest.EnvInstanceID+")")
	fs.StringVar(&cfg.TokenDir, "token-dir", env(guest.EnvTokenDir, guest.DefaultTokenDir), "token directory (env "+guest.EnvTokenDir+")")
	fs.StringVar(&cfg.Gateway, "gateway", env(guest.EnvGateway, guest.DefaultGateway), "gateway address: unix://, vsock://, tcp:// or tls:// (env "+guest.EnvGateway+")")
	fs.StringVar(&cfg.Issuer, "issuer", env(guest.EnvIssuer, ""), "expected token issuer; empty accepts any (env "+guest.EnvIssuer+")")
	fs.StringVar(&cfg.Audience, "audience", env(guest.EnvAudience, ""), "expected token audience; empty accepts any (env "+guest.EnvAudience+")")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", env(guest.EnvTrustDomain, ""), "expected SPIFFE trust domain; empty accepts any (env "+guest.EnvTrustDomain+")")
	fs.StringVar(&cfg.StatusFile, "status-file", env(guest.EnvStatusFile, ""), "status file to keep current; empty disables (env "+guest.EnvStatusFile+")")
	fs.StringVar(&cfg.TokenFile, "token-file", env(guest.EnvTokenFile, ""), "static mode: file holding the token (env "+guest.EnvTokenFile+")")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", durationEnv("SANDKEY_POLL_INTERVAL", 0), "token directory poll; 0 picks 1s on FUSE/virtio-fs, 30s elsewhere; at most 1s while the directory is not watched (no inotify) (env SANDKEY_POLL_INTERVAL)")
	fs.DurationVar(&cfg.Grace, "grace", durationEnv("SANDKEY_GRACE", 10*time.Second), "after SIGTERM, how long the workload has before SIGKILL (env SANDKEY_GRACE)")
	fs.StringVar(&cfg.User, "user", env(guest.EnvUser, ""), "run the workload and execs as this user: name, uid, uid:gid or name:group, names from the sandbox's /etc/passwd and /etc/group; empty keeps the supervisor's (env "+guest.EnvUser+")")
	fs.StringVar(&cfg.VMInit, "vm-init", env(guest.EnvVMInit, "auto"), "microVM init duties: auto (when PID 1 without /proc), on, off (env "+guest.EnvVMInit+")")
	fs.StringVar(&logLevel, "log-level", env("SANDKEY_LOG_LEVEL", "info"), "log level (env SANDKEY_LOG_LEVEL)")
	fs.StringVar(&logFormat, "log-format", env("SANDKEY_LOG_FORMAT", "json"), "log format: json or console (env SANDKEY_LOG_FORMAT)")
	// No environment variable: none may turn a sandbox's PID 1 into a copier.
	fs.StringVar(&copyTo, "copy-to", "", "copy this binary to the given path (mode 0555) and exit, running nothing: the init container of a Kubernetes pod from an image without a supervisor (default: run the workload)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: supervisor [flags] -- command args...\n       supervisor --copy-to DEST")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return supervisor.ExitUsage
	}
	if copyTo != "" {
		if err := supervisor.CopySelf(copyTo); err != nil {
			fmt.Fprintf(os.Stderr, "supervisor: --copy-to: %v\n", err)
			return supervisor.ExitSoftware
		}
		return 0
	}
	cfg.Argv = fs.Args()
	cfg.StaticToken = os.Getenv(guest.EnvToken)
	cfg.GatewayCA = os.Getenv(guest.EnvGatewayCA)
	switch cfg.VMInit {
	case "auto", "on", "off":
	default:
		fmt.Fprintf(os.Stderr, "supervisor: --vm-init %q: want auto, on or off\n", cfg.VMInit)
		return supervisor.ExitUsage
	}
	log, err := logging.New(logLevel, logFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return supervisor.ExitUsage
	}
	defer log.Sync()
	log = log.With(zap.String("sandbox", cfg.SandboxID))

	// Signals are the workload runner's: it forwards them and, on SIGTERM,
	// stops the workload after the grace; its exit then ends the supervisor.
	return supervisor.Run(context.Background(), cfg, log)
}

func durationEnv(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %s=%q: %v; using %s\n", name, v, err, def)
		return def
	}
	return d
}
