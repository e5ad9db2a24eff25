package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandkey/sandkey/pkg/guest"
)

// Options are the supervisor's flags, each defaulting to its SANDKEY_*
// variable (none for CopyTo).
type Options struct {
	Config
	LogLevel, LogFormat string
	// CopyTo: copy this binary there and exit (an init container's job).
	CopyTo string
}

// NewFlags defines every flag of the supervisor on o. A variable that does not parse is an
// error naming it: a sandbox never runs on a setting it did not ask for.
func NewFlags(o *Options) (*pflag.FlagSet, error) {
	var errs []error
	cfg := &o.Config
	fs := pflag.NewFlagSet("supervisor", pflag.ContinueOnError)
	fs.StringVar(&cfg.Mode, "auth-mode", env(guest.EnvAuthMode, ""), "auth mode: dir, static or k8s-sa (env "+guest.EnvAuthMode+"; default: none, the driver sets it)")
	fs.StringVar(&cfg.SandboxID, "sandbox-id", env(guest.EnvSandboxID, ""), "this sandbox's id (env "+guest.EnvSandboxID+"; default: none, the driver sets it)")
	fs.StringVar(&cfg.InstanceID, "instance-id", env(guest.EnvInstanceID, ""), "this start's instance id (env "+guest.EnvInstanceID+"; default: none, the driver sets it)")
	fs.StringVar(&cfg.TokenDir, "token-dir", env(guest.EnvTokenDir, guest.DefaultTokenDir), "token directory (env "+guest.EnvTokenDir+")")
	fs.StringVar(&cfg.Gateway, "gateway", env(guest.EnvGateway, guest.DefaultGateway), "gateway address: unix://, vsock://, tcp:// or tls:// (env "+guest.EnvGateway+")")
	fs.StringVar(&cfg.Issuer, "issuer", env(guest.EnvIssuer, ""), "expected token issuer; empty accepts any (env "+guest.EnvIssuer+")")
	fs.StringVar(&cfg.Audience, "audience", env(guest.EnvAudience, ""), "expected token audience; empty accepts any (env "+guest.EnvAudience+")")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", env(guest.EnvTrustDomain, ""), "expected SPIFFE trust domain; empty accepts any (env "+guest.EnvTrustDomain+")")
	fs.StringVar(&cfg.StatusFile, "status-file", env(guest.EnvStatusFile, ""), "status file to keep current; empty disables (env "+guest.EnvStatusFile+")")
	fs.StringVar(&cfg.TokenFile, "token-file", env(guest.EnvTokenFile, ""), "static mode: file holding the token (env "+guest.EnvTokenFile+"; default: none, the token from "+guest.EnvToken+")")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", durationEnv("SANDKEY_POLL_INTERVAL", 0, &errs), "token directory poll; default 0: 1s on FUSE/virtio-fs, 30s elsewhere; at most 1s while the directory is not watched (no inotify) (env SANDKEY_POLL_INTERVAL)")
	fs.DurationVar(&cfg.Grace, "grace", durationEnv("SANDKEY_GRACE", 10*time.Second, &errs), "after SIGTERM, how long the workload has before SIGKILL; 0 kills at once (env SANDKEY_GRACE)")
	fs.StringVar(&cfg.User, "user", env(guest.EnvUser, ""), "run the workload and execs as this user: name, uid, uid:gid or name:group, names from the sandbox's /etc/passwd and /etc/group; empty keeps the supervisor's (env "+guest.EnvUser+")")
	fs.StringVar(&cfg.VMInit, "vm-init", env(guest.EnvVMInit, "auto"), "microVM init duties: auto (when PID 1 without /proc), on, off (env "+guest.EnvVMInit+")")
	fs.StringVar(&o.LogLevel, "log-level", env("SANDKEY_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env SANDKEY_LOG_LEVEL)")
	fs.StringVar(&o.LogFormat, "log-format", env("SANDKEY_LOG_FORMAT", "json"), "log format: json or console (env SANDKEY_LOG_FORMAT)")
	// No environment variable: none may turn a sandbox's PID 1 into a copier.
	fs.StringVar(&o.CopyTo, "copy-to", "", "copy this binary to the given path (mode 0555) and exit, running nothing: the init container of a Kubernetes pod from an image without a supervisor (default: run the workload)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: supervisor [flags] -- command args...\n       supervisor --copy-to DEST")
		fs.PrintDefaults()
	}
	return fs, errors.Join(errs...)
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// durationEnv reads the duration in the variable name, or def when it is
// unset or empty; one that does not parse is added to errs.
func durationEnv(name string, def time.Duration, errs *[]error) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a duration such as %s or 500ms", name, v, def))
		return def
	}
	return d
}
