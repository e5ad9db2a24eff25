package gatewaycmd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/logging"
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/store"
)

// serveOptions are `gateway serve`'s settings; each is a flag, an
// environment variable and a config file key (see config.go).
type serveOptions struct {
	configFile        string
	lifetime          time.Duration
	issuer            string
	audience          string
	trustDomain       string
	sweepInterval     time.Duration
	stopGrace         time.Duration
	heartbeatInterval time.Duration
	jwksMaxAge        time.Duration
	keyPublishDelay   time.Duration
	httpAddr          string
	sessionAddr       string
	sessionCert       string
	sessionKey        string
	adminTCP          string
	adminCert         string
	adminKey          string
	adminTokenFile    string
	peerCA            string
	defaultDriver     string
	drivers           driverOptions
	store             string
	keyFile           string
	tokenRoot         string
	tokenRootSize     string
	logLevel          string
	logFormat         string
	demo              bool
	replicaAdvertise  string
	leaderLease       time.Duration
	unknownEnv        []string // SANDKEY_* variables that are no setting, warned about
}

func newServeCommand(g *globals) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway: mint and rotate tokens, run sandboxes, serve supervisors and operators",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The CLI's own flags are no settings of a gateway.
			skip := map[string]bool{"config": true, "help": true, "admin": true, "admin-ca": true, "output": true}
			from, err := applyConfig(cmd.Flags(), o.configFile, skip)
			if err != nil {
				return usageError{err}
			}
			return from.annotate(checkAndServe(cmd, g, o))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", os.Getenv("SANDKEY_CONFIG"), "YAML file of settings named like these flags (env SANDKEY_CONFIG; default: none, flags and environment only)")
	f.DurationVar(&o.lifetime, "token-lifetime", auth.DefaultLifetime, "lifetime of every token; at least 10s")
	f.StringVar(&o.issuer, "issuer", gateway.DefaultIssuer, "token issuer (iss)")
	f.StringVar(&o.audience, "audience", gateway.DefaultAudience, "token audience (aud)")
	f.StringVar(&o.trustDomain, "trust-domain", gateway.DefaultTrustDomain, "SPIFFE trust domain of token subjects")
	f.DurationVar(&o.sweepInterval, "sweep-interval", gateway.DefaultSweepInterval, "how often the rotation sweep runs")
	f.DurationVar(&o.stopGrace, "stop-grace", gateway.DefaultStopGrace, "grace between SIGTERM and SIGKILL when stopping a sandbox")
	f.DurationVar(&o.heartbeatInterval, "heartbeat-interval", gateway.DefaultHeartbeatInterval, "session heartbeat interval")
	f.DurationVar(&o.jwksMaxAge, "jwks-max-age", gateway.DefaultJWKSMaxAge, "Cache-Control max-age of /jwks.json; at least 1s")
	f.DurationVar(&o.keyPublishDelay, "key-publish-delay", gateway.DefaultKeyPublishDelay, "how long keys rotate publishes a new signing key before it signs with it; at least --jwks-max-age")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9464", "HTTP address for /healthz, /readyz, /metrics, /jwks.json; empty disables")
	f.StringVar(&o.sessionAddr, "session-addr", "", "also serve supervisor sessions on this TCP address (shared, bearer token only; TLS required off loopback); default: none, each sandbox's own socket only")
	f.StringVar(&o.sessionCert, "session-tls-cert", "", "TLS certificate for --session-addr (default: none, plaintext, allowed on loopback only)")
	f.StringVar(&o.sessionKey, "session-tls-key", "", "TLS private key for --session-addr (default: none, with --session-tls-cert)")
	f.StringVar(&o.adminTCP, "admin-tcp", "", "also serve the operator API on this TCP address, with TLS and an admin token (default: none, the unix socket <state-dir>/admin.sock only)")
	f.StringVar(&o.adminCert, "admin-tls-cert", "", "TLS certificate for --admin-tcp (default: none; required with it)")
	f.StringVar(&o.adminKey, "admin-tls-key", "", "TLS private key for --admin-tcp (default: none; required with it)")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the bearer token --admin-tcp requires (default: none; required with it)")
	addPeerFlags(f, o)
	f.StringVar(&o.defaultDriver, "driver", process.Name, "driver for sandboxes created without one; one of --drivers (default: process, or the first of --drivers when process is not among them)")
	addDriverFlags(f, &o.drivers)
	f.StringVar(&o.tokenRoot, "token-root", "", "directory of the sandboxes' token directories; default <state-dir>/tokens, mounted as a tmpfs when the gateway may mount (else $XDG_RUNTIME_DIR/sandkey/..., else on disk with a warning)")
	f.StringVar(&o.tokenRootSize, "token-root-size", memroot.DefaultTokenSize, "size limit of the tmpfs mounted at the token root (bytes, or with a k, m, g or % suffix)")
	f.StringVar(&o.store, "store", "", "where the gateway keeps its state: an SQLite file path, or a Postgres DSN postgres://USER:PASSWORD@HOST:PORT/DATABASE (default <state-dir>/"+gateway.StoreFile+")")
	f.StringVar(&o.keyFile, "key-file", "", "32-byte key file encrypting signing keys at rest (default: none, keys stored unencrypted)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	f.StringVar(&o.replicaAdvertise, "replica-advertise", "", "run as one of several gateway replicas sharing a Postgres --store: host:port where the other replicas reach this one's --admin-tcp; empty: a single gateway (replica mode needs --store postgres://..., --drivers kubernetes alone, --admin-tcp with its TLS pair and --admin-token-file, and --session-addr)")
	f.DurationVar(&o.leaderLease, "leader-lease", gateway.DefaultLeaderLease, "lease of the leader gateway (the one that sweeps, prunes and activates keys), renewed every third of it; a dead leader is replaced within it; at least 3s")
	f.BoolVar(&o.demo, "demo", false, "create and start a demo sandbox with a short token lifetime (30s unless set)")
	return cmd
}

// checkAndServe refuses settings that contradict each other, then serves.
func checkAndServe(cmd *cobra.Command, g *globals, o *serveOptions) error {
	if err := checkDurations(cmd.Flags()); err != nil {
		return err
	}
	if o.demo && !cmd.Flags().Changed("token-lifetime") {
		o.lifetime = demoLifetime
	}
	if err := checkReplicaMode(o, cmd.Flags().Changed); err != nil {
		return err
	}
	if err := checkDefaultDriver(o, cmd.Flags().Changed("driver")); err != nil {
		return err
	}
	o.unknownEnv = unknownEnv(cmd.Flags())
	return runServe(cmd.Context(), g, o)
}

// findSupervisor locates the supervisor binary the process driver runs
// and the container drivers mount into images without their own.
func findSupervisor(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "supervisor")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	p, err := exec.LookPath("supervisor")
	if err != nil {
		return "", Usagef("no supervisor binary beside the gateway or on PATH; build it (make build) or pass --supervisor")
	}
	return filepath.Abs(p)
}

func runServe(ctx context.Context, g *globals, o *serveOptions) error {
	log, err := logging.New(o.logLevel, o.logFormat)
	if err != nil {
		return Usagef("%v", err)
	}
	defer log.Sync()
	if len(o.unknownEnv) > 0 {
		log.Warn("environment variables that are no setting of gateway serve are ignored; settings are SANDKEY_<FLAG>, see gateway serve --help",
			zap.Strings("variables", o.unknownEnv))
	}
	// Before any key, token or operator credential is in memory.
	if err := keepMemoryPrivate(); err != nil {
		log.Warn("the gateway's memory stays readable to its user and may be dumped to a disk on a crash", zap.Error(err))
	}
	// gateway.Config takes a zero lifetime for the default; a zero given
	// here is a request for tokens that never expire, which is refused.
	if err := auth.CheckLifetime(o.lifetime); err != nil {
		return usageError{fmt.Errorf("--token-lifetime: %w", err)}
	}
	cfg := gateway.Config{
		StateDir: g.stateDir, Store: o.store, KeyFile: o.keyFile, Lifetime: o.lifetime,
		Issuer: o.issuer, Audience: o.audience, TrustDomain: o.trustDomain,
		SweepInterval: o.sweepInterval, StopGrace: o.stopGrace, HeartbeatInterval: o.heartbeatInterval,
		JWKSMaxAge: o.jwksMaxAge, KeyPublishDelay: o.keyPublishDelay,
		DefaultDriver: o.defaultDriver, Logger: log,
		ReplicaAdvertise: o.replicaAdvertise, LeaderLease: o.leaderLease,
	}
	if (o.sessionCert == "") != (o.sessionKey == "") {
		return Usagef("--session-tls-cert and --session-tls-key go together")
	}
	// Settings of a listener that is not asked for do nothing; whoever
	// gave them meant to serve it.
	if o.sessionAddr == "" && (o.sessionCert != "" || o.sessionKey != "") {
		return Usagef("--session-tls-cert and --session-tls-key secure --session-addr, which is not set: set it (such as --session-addr 0.0.0.0:7443) or drop them")
	}
	// (Not --admin-token-file: SANDKEY_ADMIN_TOKEN_FILE is also the CLI's.)
	if o.adminTCP == "" && (o.adminCert != "" || o.adminKey != "") {
		return Usagef("--admin-tls-cert and --admin-tls-key secure --admin-tcp, which is not set: set it (such as --admin-tcp 0.0.0.0:7444) or drop them")
	}
	if o.adminTCP != "" && (o.adminCert == "" || o.adminKey == "" || o.adminTokenFile == "") {
		return Usagef("--admin-tcp %s: the operator API on TCP needs --admin-tls-cert, --admin-tls-key and --admin-token-file; set all three", o.adminTCP)
	}
	if o.sessionCert != "" {
		pair, err := tls.LoadX509KeyPair(o.sessionCert, o.sessionKey)
		if err != nil {
			return Usagef("session TLS: %v", err)
		}
		cfg.SessionTLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
	}
	if err := cfg.CheckSettings(); err != nil {
		return usageError{fmt.Errorf("gateway config: %w", err)}
	}
	if err := memroot.CheckTokenSize(o.tokenRootSize); err != nil {
		return usageError{fmt.Errorf("--token-root-size: %w", err)}
	}
	if _, err := enabledDrivers(&o.drivers); err != nil {
		return err
	}
	adminOpts, closePeers, err := peerOptions(o)
	if err != nil {
		return err
	}
	defer closePeers() // after the operator API servers, deferred later, stop
	// The state directory is made (0700), or refused when others may read
	// it, and locked, before drivers put their own directories in it.
	if err := gateway.CheckStateDir(g.stateDir); err != nil {
		// A path that is no directory, cannot be made or is not private:
		// the operator's to fix.
		return usageError{fmt.Errorf("--state-dir: %w", err)}
	}
	// One gateway per state directory, locked before anything in it is
	// touched: a second one would take the first's sandbox sockets.
	lock, err := gateway.LockStateDir(g.stateDir)
	if err != nil {
		if errors.As(err, new(*gateway.StateDirInUseError)) {
			return usageError{err}
		}
		return err
	}
	defer lock.Close()
	tokens, err := memroot.PrepareTokens(g.stateDir, o.tokenRoot, o.tokenRootSize)
	if errors.Is(err, memroot.ErrNotARoot) {
		return usageError{fmt.Errorf("--token-root: %w", err)}
	}
	if err != nil {
		return err
	}
	cfg.TokenRoot = tokens.Path
	sockets, err := memroot.PrepareSockets(g.stateDir)
	if err != nil {
		return err
	}
	cfg.SocketRoot = sockets.Path
	drivers, err := buildDrivers(driverEnv{stateDir: g.stateDir, log: log,
		supervisor: func() (string, error) { return findSupervisor(o.drivers.supervisorF) }}, &o.drivers)
	if err != nil {
		return err
	}
	defer closeDrivers(drivers)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Drivers, cfg.Registerer = drivers, reg
	gw, err := gateway.Open(ctx, cfg)
	if err != nil {
		for _, root := range []memroot.Root{tokens, sockets} {
			if root.Mounted { // nothing can hold a view of it yet
				memroot.Unmount(root.Path)
			}
		}
		// --store names a database that does not parse, answer or let us in.
		if errors.Is(err, gateway.ErrStoreLocation) {
			return usageError{fmt.Errorf("--store: %w", err)}
		}
		if errors.Is(err, gateway.ErrKeyFile) {
			return usageError{fmt.Errorf("--key-file: %w", err)}
		}
		// Another live gateway on the store that this one may not join.
		if errors.Is(err, gateway.ErrReplicaConflict) {
			return usageError{err}
		}
		return err
	}
	defer gw.Close()
	if tokens.MemoryBacked {
		log.Info("token directories are in memory", zap.String("token_root", tokens.Path), zap.String("fs_type", tokens.FSType),
			zap.Bool("mounted_now", tokens.Mounted))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	fail := make(chan error, 4)

	adminSrv := grpc.NewServer()
	defer adminSrv.Stop()
	admin.Register(adminSrv, gw, log.Named("admin"), adminOpts...)
	admin.RegisterReflection(adminSrv)
	adminPath := filepath.Join(g.stateDir, AdminSocketName)
	l, err := admin.ListenUnix(adminPath)
	if err != nil {
		return err
	}
	serveGRPC(&wg, fail, adminSrv, l)
	if o.adminTCP != "" {
		tcpSrv, tl, err := admin.ListenTCP(o.adminTCP, admin.TCPConfig{CertFile: o.adminCert, KeyFile: o.adminKey, TokenFile: o.adminTokenFile})
		if err != nil {
			return usageError{err}
		}
		defer tcpSrv.Stop()
		admin.Register(tcpSrv, gw, log.Named("admin"), adminOpts...)
		serveGRPC(&wg, fail, tcpSrv, tl)
	}
	if o.httpAddr != "" {
		hl, err := net.Listen("tcp", o.httpAddr)
		if err != nil {
			return usageError{fmt.Errorf("--http-addr %s: %w (give another address, such as 127.0.0.1:0, or an empty one to serve no HTTP; SANDKEY_HTTP_ADDR does it for make run)", o.httpAddr, err)}
		}
		srv := newHTTPServer(gw, reg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(hl); err != nil && !errors.Is(err, errServerClosed) {
				fail <- fmt.Errorf("http: %w", err)
			}
		}()
		defer srv.Close()
		log.Info("http serving", zap.String("addr", hl.Addr().String()))
	}
	if o.sessionAddr != "" {
		sl, err := net.Listen("tcp", o.sessionAddr)
		if err != nil {
			return usageError{fmt.Errorf("--session-addr %s: %w", o.sessionAddr, err)}
		}
		if err := gw.ServeShared("tcp", sl); err != nil {
			if cfg.SessionTLS == nil {
				return Usagef("--session-addr %s: %v: give --session-tls-cert and --session-tls-key, or a loopback address", o.sessionAddr, err)
			}
			return Usagef("--session-addr %s: %v", o.sessionAddr, err)
		}
		log.Info("sessions serving on a shared listener", zap.String("addr", sl.Addr().String()), zap.Bool("tls", cfg.SessionTLS != nil))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		gw.Serve(ctx)
	}()
	log.Info("operator API serving", zap.String("socket", adminPath))
	if o.demo {
		if err := startDemo(ctx, gw, g, o, log); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		log.Info("gateway stopping; sandboxes keep running")
		return nil
	case err := <-fail:
		return err
	}
}

// checkDurations refuses a duration setting that is not positive: the
// gateway reads a zero as its default, so a 0 given on purpose ("no
// grace", "no heartbeat") would silently become 10s, and a negative one
// would reach a ticker. --token-lifetime and --leader-lease have minimums
// of their own, checked with their reasons.
func checkDurations(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Value.Type() != "duration" || f.Name == "token-lifetime" || f.Name == "leader-lease" {
			return
		}
		if v, err := time.ParseDuration(f.Value.String()); err == nil && v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %s: must be positive (default %s)", f.Name, v, f.DefValue))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	return nil
}

// checkDefaultDriver makes --driver one of --drivers: left unset, it is
// process when enabled, else the first enabled driver; set, it must be
// enabled, or every create without --driver would fail.
func checkDefaultDriver(o *serveOptions, changed bool) error {
	enabled := o.drivers.enabled
	if slices.Contains(enabled, o.defaultDriver) || len(enabled) == 0 {
		return nil
	}
	if !changed {
		o.defaultDriver = enabled[0]
		return nil
	}
	return Usagef("--driver %s: not among --drivers %s; enable it (--drivers %s,%s) or pick one of those",
		o.defaultDriver, strings.Join(enabled, ","), strings.Join(enabled, ","), o.defaultDriver)
}

func serveGRPC(wg *sync.WaitGroup, fail chan<- error, srv *grpc.Server, l net.Listener) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			fail <- fmt.Errorf("serve %s: %w", l.Addr(), err)
		}
	}()
}

// checkReplicaMode refuses, naming the flag and saying why, settings that
// contradict --replica-advertise (see docs/operating.md, "Gateway
// replicas"). With it, --driver defaults to kubernetes.
func checkReplicaMode(o *serveOptions, changed func(flag string) bool) error {
	if o.leaderLease < gateway.MinLeaderLease {
		return Usagef("--leader-lease %s: must be at least %s (it is renewed every third of it)", o.leaderLease, gateway.MinLeaderLease)
	}
	if o.replicaAdvertise == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(o.replicaAdvertise); err != nil || port == "" {
		return Usagef("--replica-advertise %q: want host:port, the address of this replica's --admin-tcp as the other replicas reach it", o.replicaAdvertise)
	}
	if !changed("driver") {
		o.defaultDriver = kubernetes.Name
	}
	var errs []error
	if !store.IsPostgresDSN(o.store) {
		errs = append(errs, errors.New("--store: replicas share one database: give a Postgres DSN (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"))
	}
	if len(o.drivers.enabled) != 1 || o.drivers.enabled[0] != kubernetes.Name {
		errs = append(errs, fmt.Errorf("--drivers %s: replicas run only the kubernetes driver (--drivers kubernetes): other drivers write token directories and sockets on their own host, which the other replicas cannot reach",
			strings.Join(o.drivers.enabled, ",")))
	}
	if o.adminTCP == "" || o.adminCert == "" || o.adminKey == "" || o.adminTokenFile == "" {
		errs = append(errs, errors.New("--admin-tcp, --admin-tls-cert, --admin-tls-key and --admin-token-file: replicas forward operator calls to each other's operator API over TLS with that token; set all four"))
	}
	if o.sessionAddr == "" {
		errs = append(errs, errors.New("--session-addr: supervisors reach any replica through the shared session listener (behind a Service); set it"))
	}
	if err := errors.Join(errs...); err != nil {
		return usageError{fmt.Errorf("--replica-advertise %s (replica mode): %w", o.replicaAdvertise, err)}
	}
	return nil
}
