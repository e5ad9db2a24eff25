package supervisor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/supervisor/vminit"
	"github.com/sandkey/sandkey/pkg/supervisor/workload"
)

// Version is reported to the gateway in every Hello.
var Version = "dev"

// reportExitTimeout bounds the exit report's retries: a supervisor being
// stopped must end well within the driver's grace, gateway or not.
const reportExitTimeout = 3 * time.Second

// statusRefresh is how often the status file is rewritten when nothing
// else changed, so its expiry flag stays current; token and session
// changes are written at once.
const statusRefresh = 5 * time.Second

// tokenSource is what the supervisor needs of a token source: the
// session's view of it, plus change notifications for the status file.
type tokenSource interface {
	session.TokenSource
	Subscribe() (<-chan *auth.Token, func())
	Close() error
}

// Run runs the supervisor until the workload ends, and returns the exit
// code the process should end with.
func Run(ctx context.Context, cfg Config, log *zap.Logger) int {
	if err := maybeInitVM(cfg, log); err != nil {
		log.Error("vm init", zap.Error(err))
		return ExitConfig
	}
	if err := cfg.Check(); err != nil {
		return fail(log, err)
	}
	dial, err := cfg.dialOptions()
	if err != nil {
		return fail(log, err)
	}
	user, err := lookupUser(cfg.User)
	if err != nil {
		return fail(log, err)
	}
	// One inotify instance for everything the supervisor watches: they are
	// a per-user limit, shared with every other sandbox of the host user.
	watcher := dirwatch.New(log.Named("watch"))
	defer watcher.Close()
	if degraded := degradedReason(watcher); degraded != "" {
		log.Warn(degraded, zap.Error(watcher.Err()))
	}
	src, err := newSource(ctx, cfg, dial, watcher, log)
	if err != nil {
		return fail(log, err)
	}
	defer src.Close()
	if tok := src.Current(); tok != nil {
		log.Info("holding token", zap.Uint64("gen", tok.Gen()), zap.String("jti", tok.JTI()), zap.Time("exp", tok.ExpiresAt()))
	} else if cfg.Mode != guest.ModeK8sSA {
		log.Warn("no valid token at start; waiting for the session to deliver one")
	}

	env := userEnv(workloadEnv(), user)
	wcfg := workload.Config{
		Argv: cfg.Argv, Env: env, Grace: cfg.Grace,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Logger: log.Named("workload"),
	}
	if user != nil {
		wcfg.UID, wcfg.GID, wcfg.Groups = &user.UID, &user.GID, user.Groups
		log.Info("workload runs as another user", zap.String("user", cfg.User),
			zap.Uint32("uid", user.UID), zap.Uint32("gid", user.GID), zap.Uint32s("groups", user.Groups))
	}
	runner, err := workload.Start(context.Background(), wcfg)
	if err != nil {
		log.Error("start workload", zap.Strings("argv", cfg.Argv), zap.Error(err))
		reportStartFailure(cfg, src, dial, watcher, log)
		return session.ExitNotFound
	}
	defer runner.Close()

	client, err := session.NewClient(session.ClientConfig{
		Target: cfg.Gateway, SandboxID: cfg.SandboxID, InstanceID: cfg.InstanceID, Version: Version,
		Source: src, Exec: reaperExec{reaper: runner.Reaper(), env: env, user: user}, Logger: log.Named("session"),
		Watcher: watcher, DialOptions: dial, Backoff: backoffFor(cfg.Mode),
	})
	if err != nil {
		runner.Stop()
		runner.Wait()
		return fail(log, configErr(ExitConfig, "gateway %s: %v", cfg.Gateway, err))
	}
	defer client.Close()

	sessCtx, stopSession := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { client.Run(sessCtx) })
	if cfg.StatusFile != "" {
		wg.Go(func() { keepStatus(sessCtx, cfg, src, client, watcher, runner.Pid(), statusRefresh, log) })
	}

	// A cancelled ctx (the supervisor's own SIGTERM is forwarded by the
	// runner) ends the workload; either way its exit decides ours.
	select {
	case <-runner.Done():
	case <-ctx.Done():
		runner.Stop()
	}
	exit := runner.Wait()
	log.Info("workload exited", zap.Int("code", exit.Code), zap.Int("signal", int(exit.Signal)))
	reportCtx, cancel := context.WithTimeout(context.Background(), reportExitTimeout)
	switch err := client.ReportExit(reportCtx, exit.Code, int(exit.Signal)); {
	case errors.Is(err, session.ErrUnknownSandbox):
		log.Info("the sandbox was deleted: no exit to report")
	case err != nil:
		log.Warn("report exit to the gateway", zap.Error(err))
	}
	cancel()
	stopSession()
	wg.Wait()
	return exit.Code
}

// reportStartFailure tells the gateway that the workload never started,
// as an exit with code 127: the session that reports every other exit is
// never opened then, and the sandbox would stay "running" with no process
// (a mistyped command) until the gateway restarted.
func reportStartFailure(cfg Config, src tokenSource, dial []session.DialOption, watcher *dirwatch.Watcher, log *zap.Logger) {
	client, err := session.NewClient(session.ClientConfig{
		Target: cfg.Gateway, SandboxID: cfg.SandboxID, InstanceID: cfg.InstanceID, Version: Version,
		Source: src, Logger: log.Named("session"), Watcher: watcher, DialOptions: dial, Backoff: backoffFor(cfg.Mode),
	})
	if err != nil {
		log.Warn("report the failed start to the gateway", zap.Error(err))
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), reportExitTimeout)
	defer cancel()
	if err := client.ReportExit(ctx, session.ExitNotFound, 0); err != nil && !errors.Is(err, session.ErrUnknownSandbox) {
		log.Warn("report the failed start to the gateway", zap.Error(err))
	}
}

func fail(log *zap.Logger, err error) int {
	var ce *ConfigError
	if errors.As(err, &ce) {
		log.Error("cannot start", zap.Error(err))
		return ce.Code
	}
	log.Error("supervisor failed", zap.Error(err))
	return ExitSoftware
}

// degradedReason says, for the log and the status file, how the
// supervisor works without an inotify instance; "" when it has one.
func degradedReason(w *dirwatch.Watcher) string {
	if w.Err() == nil {
		return ""
	}
	return fmt.Sprintf("no inotify instance left for this user: polling the token directory every %s and, while reconnecting, "+
		"the gateway socket every %s; raise fs.inotify.max_user_instances on the host",
		source.DefaultUnwatchedPollInterval, session.DefaultSocketPollInterval)
}

// backoffFor is the session's reconnect policy in a mode.
func backoffFor(mode string) session.Backoff {
	if mode == guest.ModeK8sSA {
		return session.Backoff{Max: k8sReconnectMax}
	}
	return session.Backoff{}
}

func newSource(ctx context.Context, cfg Config, dial []session.DialOption, watcher *dirwatch.Watcher, log *zap.Logger) (tokenSource, error) {
	if cfg.Mode == guest.ModeK8sSA {
		return newExchangeSource(ctx, cfg, dial, watcher, log)
	}
	if cfg.Mode == guest.ModeStatic {
		log.Warn("auth mode static: the token is read once and never refreshed; it stops working when it expires")
		return newStaticSource(cfg)
	}
	return source.New(ctx, source.Config{
		SandboxID: cfg.SandboxID, Dir: cfg.TokenDir, Issuer: cfg.Issuer, Audience: cfg.Audience,
		TrustDomain: cfg.TrustDomain, PollInterval: cfg.PollInterval, Logger: log.Named("source"),
		Watcher: watcher,
	})
}

// sessionState is what the status file shows of the session: its state,
// and a signal each time that state changes.
type sessionState interface {
	State() (connected bool, sessionID string, lastErr error)
	Changes() <-chan struct{}
}

// keepStatus rewrites the status file at once on every new token and
// every change of the session's state, and every refresh besides (for the
// expiry flag).
func keepStatus(ctx context.Context, cfg Config, src tokenSource, sess sessionState, watcher *dirwatch.Watcher, pid int, refresh time.Duration, log *zap.Logger) {
	changes, cancel := src.Subscribe()
	defer cancel()
	t := time.NewTicker(refresh)
	defer t.Stop()
	var lastErr string
	for {
		st := Status{SandboxID: cfg.SandboxID, WorkloadPID: pid}
		st.setToken(src.Current(), time.Now())
		st.setSession(sess.State())
		st.setWatch(degradedReason(watcher))
		if err := writeStatus(cfg.StatusFile, st); err != nil && err.Error() != lastErr {
			lastErr = err.Error()
			log.Warn("status file", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-sess.Changes():
		case <-t.C:
		}
	}
}

// workloadEnv is the workload's environment: the supervisor's, less the
// static token.
func workloadEnv() []string { return execEnv() }

// maybeInitVM does init's duties in a microVM. The share tag and the
// network address come from the kernel command line, which is only
// readable once /proc is mounted: a first Setup mounts the file systems
// and brings up loopback, the second (idempotent) adds the rest.
func maybeInitVM(cfg Config, log *zap.Logger) error {
	if cfg.VMInit == "off" || (cfg.VMInit == "auto" && !vminit.NeedsInit()) {
		return nil
	}
	if err := vminit.Setup(vminit.Config{}, log.Named("vminit")); err != nil {
		return err
	}
	data, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	// SANDKEY_VM_* variables win: libkrun boots its own kernel command line.
	params := vminit.ParseKernelCmdline(string(data))
	maps.Copy(params, vminit.EnvParams(os.Environ()))
	return vminit.Setup(vminit.ConfigFromCmdline(params), log.Named("vminit"))
}
