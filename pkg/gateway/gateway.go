package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/sandboxlock"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
	"github.com/sandkey/sandkey/pkg/store"
)

// StoreFile is the store's file name under the state directory.
const StoreFile = "sandkey.db"

// Gateway is a running control plane. Open builds and reconciles it;
// Serve runs its sweep and sessions until the context ends; Close releases
// what Open acquired.
type Gateway struct {
	cfg   Config
	log   *zap.Logger
	store *store.Store
	keys  *auth.KeySet
	// keyState tracks the key waiting for activation (keys.go).
	keyState keyState
	issuer   *auth.Issuer
	verify   *auth.Verifier
	jwks     atomic.Pointer[[]byte]
	metrics  *metrics
	// tokens is where the token directories live, and whether in memory;
	// socketRoot is where the sandbox sockets live.
	tokens, socketRoot memroot.Root

	sessions *session.Server
	grpc     *grpc.Server // serves sessions on every sandbox socket
	sockets  *session.Listeners

	// locks serialises lifecycle operations per sandbox, so a stop and a
	// start of the same sandbox never interleave.
	locks sandboxlock.Set

	// latest caches the newest token of each sandbox, so that registrations
	// and pushes need no store read or signature check.
	latestMu sync.RWMutex
	latest   map[string]*auth.Token

	ready *readiness
	// inotify compares the host's inotify limits with its sandboxes.
	inotify *inotifyCheck
	// fds compares the open-file limit with the session listeners.
	fds *fdCheck
	// writers holds each sandbox's token directory writer (a
	// *tokenWriter), by id.
	writers sync.Map
	// clock notices the wall clock going back between sweeps (sweep.go).
	clock clockWatch
	// lastPrune is when the sweep last pruned old generations (UnixNano).
	lastPrune atomic.Int64
	// noDir and anyNoDir: sandboxes whose driver writes no token directory.
	noDir    noDirectory
	anyNoDir bool
	// replicaID names this process among the gateways sharing the store.
	replicaID string

	// The leader lease (replica.go): the current term, nil when not
	// leader; leaderPoke asks runLeader to try the lease at once.
	leaderMu   sync.Mutex
	term       *leaderTerm
	leaderPoke chan struct{}
	// solo: on SQLite, Serve leads without a lease.
	solo atomic.Bool
	// fan and holders run in replica mode only (nil otherwise).
	fan     *fanout
	holders *holders
	// abandonOnStop makes Serve and Close leave the leader lease and the
	// replica registration to expire, as a killed process does (tests).
	abandonOnStop bool
}

// Open opens the store (cfg.Store, or the file under cfg.StateDir), loads (or creates) the signing
// keys, and reconciles every sandbox the store says is running with its
// driver, re-minting tokens that expired while the gateway was down. It
// serves nothing yet: call Serve.
func Open(ctx context.Context, cfg Config) (_ *Gateway, err error) {
	defer outwardTo(&err)
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if err := CheckStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, latest: make(map[string]*auth.Token),
		ready:    newReadiness(adminpb.Admin_ServiceDesc.ServiceName, sessionpb.SupervisorSession_ServiceDesc.ServiceName),
		anyNoDir: hasNoDirDriver(cfg.Drivers), replicaID: randid.New(replicaIDBytes),
		leaderPoke: make(chan struct{}, 1)}
	if g.ReplicaMode() {
		g.fan, g.holders = newFanout(g), newHolders(g)
	}
	tokens, err := memroot.InspectTokens(cfg.TokenRoot)
	if err != nil {
		return nil, err
	}
	g.tokens = tokens
	if g.socketRoot, err = memroot.InspectSockets(cfg.SocketRoot); err != nil {
		return nil, err
	}
	if !g.socketRoot.MemoryBacked {
		g.log.Info("sandbox sockets are on disk: a restart with thousands of sandboxes binds them more slowly than on a tmpfs",
			zap.String("socket_root", g.socketRoot.Path), zap.String("fs_type", g.socketRoot.FSType))
	}
	if !tokens.MemoryBacked {
		g.log.Warn("token directories are on disk, not in memory: tokens reach the disk; run the gateway as root to mount a tmpfs there, or point --token-root at a tmpfs",
			zap.String("token_root", tokens.Path), zap.String("fs_type", tokens.FSType))
	}
	location := cfg.Store
	if location == "" {
		location = filepath.Join(cfg.StateDir, StoreFile)
	}
	st, err := store.Open(ctx, location, store.Options{
		KeyFile: cfg.KeyFile, Now: cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	g.store = st
	if err := g.register(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := g.loadKeys(ctx); err != nil {
		g.Close() // leaves the replica registry too
		return nil, err
	}
	// A replica re-signs generations other replicas minted, with whichever
	// key signed them: it holds the private half of every unretired key.
	if g.ReplicaMode() {
		if err := g.reloadKeys(ctx); err != nil {
			g.Close() // leaves the replica registry too
			return nil, err
		}
	}
	g.issuer, err = auth.NewIssuer(auth.IssuerConfig{Keys: g.keys, Issuer: cfg.Issuer, Audience: cfg.Audience,
		TrustDomain: cfg.TrustDomain, Lifetime: cfg.Lifetime, Now: cfg.Now})
	if err != nil {
		g.Close() // leaves the replica registry too
		return nil, err
	}
	g.verify = g.issuer.Verifier()
	g.metrics = newMetrics(cfg.Registerer, g)
	g.inotify = newInotifyCheck(inotifyDir, cfg.Logger.Named("inotify"), cfg.Registerer)
	g.fds = newFDCheck(cfg.Logger.Named("fds"))
	g.sessions = session.NewServer(session.ServerConfig{
		Authority:         g,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Now:               cfg.Now,
		Logger:            cfg.Logger.Named("session"),
		Registerer:        cfg.Registerer,
		OnExit:            g.onExit,
		Exchanger:         g,
		OnRegister:        g.sessionChanged,
		OnUnregister:      g.sessionChanged,
	})
	var shared credentials.TransportCredentials
	if cfg.SessionTLS != nil {
		shared = credentials.NewTLS(cfg.SessionTLS)
	}
	g.grpc = grpc.NewServer(session.ServerOptions(shared)...)
	g.sessions.Register(g.grpc)
	healthpb.RegisterHealthServer(g.grpc, g.ready.health)
	g.sockets = session.NewListeners(g.grpc, cfg.Logger.Named("listeners"))
	// A replica reconciles when it gains the leader lease (Serve); a
	// single gateway before it serves anything.
	if !g.ReplicaMode() {
		if err := g.reconcile(ctx); err != nil {
			g.Close()
			return nil, fmt.Errorf("reconcile sandboxes at start: %w", err)
		}
	}
	if err := g.checkInotify(ctx); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.reportUnknownRuns(ctx); err != nil {
		g.log.Warn("look for unknown runs", zap.Error(err))
	}
	return g, nil
}

// checkInotify compares the host's inotify limits with the sandboxes that
// run on its kernel (see inotify.go).
func (g *Gateway) checkInotify(ctx context.Context) error {
	running, err := g.store.ListSandboxes(ctx, store.SandboxRunning)
	if err != nil {
		return fmt.Errorf("check inotify limits: %w", err)
	}
	var onHost []string
	for _, sb := range running {
		if d, err := g.driverFor(sb.Driver); err == nil && onHostKernel(d) {
			onHost = append(onHost, sb.ID)
		}
	}
	g.inotify.reset(onHost)
	return nil
}

// Serve runs the leader loop (the rotation sweep while this gateway holds
// the leader lease) until ctx ends, and in replica mode the fan-out of
// other replicas' generations and the record of the sessions held here
// (replica.go). Sessions are served from the end of Open, once
// reconciliation has re-minted what needed it.
func (g *Gateway) Serve(ctx context.Context) error {
	g.ready.setServing(true)
	defer g.ready.setServing(false)
	g.log.Info("gateway serving", zap.String("state_dir", g.cfg.StateDir),
		zap.Duration("token_lifetime", g.cfg.Lifetime), zap.String("replica", g.replicaID),
		zap.Bool("replica_mode", g.ReplicaMode()))
	var wg sync.WaitGroup
	if g.ReplicaMode() {
		wg.Go(func() { g.fan.run(ctx) })
		wg.Go(func() { g.holders.run(ctx) })
		wg.Go(func() {
			if err := g.store.Listen(ctx, g.fan); err != nil {
				g.log.Error("store listener", zap.Error(err))
			}
		})
	}
	g.runLeader(ctx)
	wg.Wait()
	return nil
}

// sessionChanged is the session server's OnRegister and OnUnregister.
func (g *Gateway) sessionChanged(sandboxID string) {
	if g.holders != nil {
		g.holders.changed(sandboxID)
	}
}

// TokenRoot reports where the token directories live and whether they are
// memory-backed.
func (g *Gateway) TokenRoot() memroot.Root { return g.tokens }

// SocketRoot reports where the sandbox sockets live.
func (g *Gateway) SocketRoot() memroot.Root { return g.socketRoot }

// Ready reports whether the gateway has reconciled, serves sessions and
// can mint; when not, the reason says why (with the error of the last
// failed rotation sweep), for /readyz. Open binds every running sandbox's
// socket before it returns, so once Ready, each of them answers: a
// supervisor that dials the moment its socket appears is never turned away.
func (g *Gateway) Ready() (bool, string) { return g.ready.state() }

// Health is the gRPC health service (grpc.health.v1) that follows Ready,
// for the service "" and the session and operator services. The gateway
// serves it on its session listeners; register it on other servers (the
// operator API's) as well.
func (g *Gateway) Health() healthpb.HealthServer { return g.ready.health }

// Close ends every session and listener and closes the store. Sandboxes
// keep running: a restarted gateway finds them again. The drivers belong
// to whoever made them, and stay open.
func (g *Gateway) Close() error {
	if g.ready != nil {
		g.ready.health.Shutdown()
	}
	if g.sockets != nil {
		g.sockets.Close()
	}
	if g.sessions != nil {
		g.sessions.Close()
	}
	if g.grpc != nil {
		g.grpc.Stop()
	}
	if g.store != nil {
		if g.registered() && !g.abandonOnStop {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := g.store.RemoveReplica(ctx, g.replicaID); err != nil {
				g.log.Warn("remove this gateway from the replica registry: its row lapses by itself", zap.Error(err))
			}
			cancel()
		}
		return g.store.Close()
	}
	return nil
}

// ServeShared serves sessions on a shared (not attested) listener, for
// supervisors that reach the gateway over the network: only a valid bearer
// token of one of a sandbox's two newest generations is accepted there,
// never an expired one. Without SessionTLS it refuses any address but
// loopback, where nobody can listen in.
func (g *Gateway) ServeShared(name string, l net.Listener) error {
	if g.cfg.SessionTLS == nil {
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok || !addr.IP.IsLoopback() {
			l.Close()
			return fmt.Errorf("shared session listener %s: plaintext is allowed on loopback only; configure TLS", l.Addr())
		}
	}
	return g.sockets.AddShared(name, l)
}

// Sessions returns the session server.
func (g *Gateway) Sessions() *session.Server { return g.sessions }

// JWKSMaxAge is the Cache-Control max-age to serve /jwks.json with; the
// next signing key is published at least this long before it signs.
func (g *Gateway) JWKSMaxAge() time.Duration { return g.cfg.JWKSMaxAge }

// KeyPublishDelay is how long a new signing key is published before it
// signs.
func (g *Gateway) KeyPublishDelay() time.Duration { return g.cfg.KeyPublishDelay }

// JWKSJSON returns the public keys as served on /jwks.json.
func (g *Gateway) JWKSJSON() []byte { return *g.jwks.Load() }

func (g *Gateway) sandboxDir(id string) string { return filepath.Join(g.cfg.StateDir, "sandboxes", id) }
func (g *Gateway) tokenDir(id string) string   { return filepath.Join(g.tokens.Path, id) }
func (g *Gateway) driverDir(id string) string  { return filepath.Join(g.sandboxDir(id), "driver") }

// socketDir is the directory of a sandbox's socket: <socket root>/<id>,
// or <state>/sandboxes/<id>/gw where a gateway before the socket root
// made it, which the sandbox's driver mounted and a restart must keep.
func (g *Gateway) socketDir(id string) string {
	if fi, err := os.Lstat(g.legacySocketDir(id)); err == nil && fi.IsDir() {
		return g.legacySocketDir(id)
	}
	return filepath.Join(g.socketRoot.Path, id)
}

func (g *Gateway) legacySocketDir(id string) string { return filepath.Join(g.sandboxDir(id), "gw") }

// removeSandboxFiles removes what the gateway keeps for a sandbox: its
// directory under the state directory, its socket directory and its token
// directory.
func (g *Gateway) removeSandboxFiles(id string) error {
	return errors.Join(removeAll(g.sandboxDir(id)), removeAll(filepath.Join(g.socketRoot.Path, id)), g.removeTokenDir(id))
}

func (g *Gateway) lock(id string) func() { return g.locks.Lock(id) }

// replicaIDBytes is the size of a gateway process's random replica id.
const replicaIDBytes = 8

// instanceIDBytes is the size of the random id of one start of a sandbox.
const instanceIDBytes = 8

func (g *Gateway) driverFor(name string) (driver.Driver, error) {
	d, ok := g.cfg.Drivers[name]
	if !ok {
		return nil, fmt.Errorf("driver %q is not enabled on this gateway (it has %s; `gateway serve --drivers` enables drivers)",
			name, strings.Join(driverNames(g.cfg.Drivers), ", "))
	}
	return d, nil
}

// writeToken writes one generation into the sandbox's token directory,
// with the current JWKS beside it, unless a newer generation was written
// there already: mints of one sandbox that race (the sweep, a manual
// rotation, a reissue: none takes the sandbox's lock) commit in one order
// and may reach their writes in another, and an older token written last
// would leave the directory on a superseded generation until the next
// rotation. A write skipped so is no error: the directory holds newer.
// Writers are kept per sandbox: making one checks and creates the
// directory, which a sweep need not repeat for every sandbox on every
// rotation.
func (g *Gateway) writeToken(id string, tok *auth.Token) error {
	v, ok := g.writers.Load(id)
	if !ok {
		w, err := tokendir.NewWriter(g.tokenDir(id))
		if err != nil {
			return err
		}
		v, _ = g.writers.LoadOrStore(id, &tokenWriter{w: w})
	}
	tw := v.(*tokenWriter)
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tok.Gen() <= tw.gen {
		return nil
	}
	err := tw.w.Write(map[string][]byte{tokendir.TokenFile: []byte(tok.Raw()), tokendir.JWKSFile: g.JWKSJSON()})
	if err == nil {
		tw.gen = tok.Gen()
	}
	return err
}

// tokenWriter is a sandbox's token directory writer and the newest
// generation it wrote.
type tokenWriter struct {
	mu  sync.Mutex
	w   *tokendir.Writer
	gen uint64
}

// removeTokenDir removes a sandbox's token directory, generations that
// are read-only included.
func (g *Gateway) removeTokenDir(id string) error {
	return tokendir.RemoveDir(g.tokenDir(id))
}

func removeAll(path string) error {
	if err := os.RemoveAll(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// now is the gateway's clock.
func (g *Gateway) now() time.Time { return g.cfg.Now() }
