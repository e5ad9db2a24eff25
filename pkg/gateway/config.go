package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/store"
)

// DefaultSweepBatch is how many sandboxes a sweep or a reconcile mints per
// store transaction. Each commit writes every index page its batch's random
// keys (sandbox ids, jtis) touch, so fewer, larger batches write less (a
// sweep of 10,000 spends about 6% less CPU than in batches of 1,000, 250
// cost 10% more), while the 4 batches of a sweep of 10,000 still overlap
// in the pipeline of mint.go.
const DefaultSweepBatch = 2500

// Defaults of the gateway core; cmd/gateway documents them as flag defaults.
const (
	DefaultIssuer            = "sandkey-gateway"
	DefaultAudience          = "sandkey"
	DefaultTrustDomain       = "sandkey.local"
	DefaultSweepInterval     = time.Second
	DefaultStopGrace         = 10 * time.Second
	DefaultWriteParallelism  = 16
	DefaultHeartbeatInterval = 10 * time.Second
	// DefaultJWKSMaxAge is the Cache-Control max-age of /jwks.json: how
	// long a verifier may keep a copy without asking again.
	DefaultJWKSMaxAge = time.Minute
	// DefaultKeyPublishDelay is how long a new signing key is published
	// before it signs: five cache lifetimes, so that verifiers that cache
	// the JWKS (honouring max-age, or refetching after a cool-down of
	// their own) have it before the first token it signs.
	DefaultKeyPublishDelay = 5 * DefaultJWKSMaxAge
	// DefaultLeaderLease is the leader lease: a leader that dies is
	// replaced at most this long after its last renewal.
	DefaultLeaderLease = 15 * time.Second
	// MinLeaderLease is the shortest leader lease accepted: it is renewed
	// every third of it, and a renewal is one store round trip.
	MinLeaderLease = 3 * time.Second
)

// Config configures a Gateway. Zero values take the defaults above.
type Config struct {
	// StateDir holds the store, the sandboxes' token directories and
	// sockets, and the operator socket. It must be 0700 (or narrower).
	StateDir string
	// TokenRoot holds every sandbox's token directory, as <TokenRoot>/<id>;
	// default <StateDir>/tokens. Open mounts nothing there: `gateway serve`
	// makes it memory-backed first (memroot.PrepareTokens), and Open reports
	// whether it is.
	TokenRoot string
	// SocketRoot holds every sandbox's socket directory, as
	// <SocketRoot>/<id>; default <StateDir>/sockets. `gateway serve` makes
	// it memory-backed first where it can (memroot.PrepareSockets). A sandbox
	// whose socket directory a gateway before this one made at
	// <StateDir>/sandboxes/<id>/gw keeps it there: its driver mounted it.
	SocketRoot string
	// Store is where the store lives: a Postgres DSN (postgres://...) or
	// the path of an SQLite file; StateDir/StoreFile when empty.
	Store string
	// KeyFile, when set, encrypts signing keys at rest with the 32-byte key it holds.
	KeyFile string

	Lifetime    time.Duration // token lifetime, at least auth.MinLifetime
	Issuer      string
	Audience    string
	TrustDomain string

	SweepInterval     time.Duration // how often the rotation sweep looks for due tokens
	SweepBatch        int           // sandboxes minted per store transaction
	WriteParallelism  int           // token directory writes in flight at once
	StopGrace         time.Duration // SIGTERM-to-SIGKILL grace when stopping sandboxes
	HeartbeatInterval time.Duration // session heartbeat

	// JWKSMaxAge is the max-age /jwks.json is served with.
	JWKSMaxAge time.Duration
	// KeyPublishDelay is how long `keys rotate` publishes the next key
	// before it signs; at least JWKSMaxAge.
	KeyPublishDelay time.Duration

	// ReplicaAdvertise, when set, runs the gateway as one of several
	// replicas sharing a Postgres Store: host:port where the other
	// replicas reach its operator API. Empty: a single gateway.
	ReplicaAdvertise string
	// LeaderLease is the lease of the leader, which alone sweeps, prunes
	// and activates keys; renewed every third of it. DefaultLeaderLease
	// when zero, at least MinLeaderLease.
	LeaderLease time.Duration

	// SessionTLS secures the shared session listener (ServeShared); nil
	// leaves it plaintext, which ServeShared accepts on loopback only.
	SessionTLS *tls.Config

	// Drivers by name; DefaultDriver names the one used when a create
	// request names none.
	Drivers       map[string]driver.Driver
	DefaultDriver string

	Now        func() time.Time
	Jitter     func() float64 // rotation jitter in [0, 1)
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.TokenRoot == "" && c.StateDir != "" {
		c.TokenRoot = memroot.TokenRoot(c.StateDir)
	}
	if c.SocketRoot == "" && c.StateDir != "" {
		c.SocketRoot = memroot.SocketRoot(c.StateDir)
	}
	if c.Lifetime == 0 {
		c.Lifetime = auth.DefaultLifetime
	}
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.SweepBatch == 0 {
		c.SweepBatch = DefaultSweepBatch
	}
	if c.WriteParallelism == 0 {
		c.WriteParallelism = DefaultWriteParallelism
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.JWKSMaxAge == 0 {
		c.JWKSMaxAge = DefaultJWKSMaxAge
	}
	if c.KeyPublishDelay == 0 {
		c.KeyPublishDelay = DefaultKeyPublishDelay
	}
	if c.LeaderLease == 0 {
		c.LeaderLease = DefaultLeaderLease
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Jitter == nil {
		c.Jitter = defaultJitter
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// maxSocketPath is the longest unix socket path Linux binds (sun_path is
// 108 bytes with its terminating NUL), and socketSuffix is what the gateway
// appends to the socket root for a sandbox's socket.
const (
	maxSocketPath = 107
	socketSuffix  = "/0123456789abcdef0123456789abcdef/" + guest.SocketName
)

func (c *Config) validate() error {
	return errors.Join(c.validateSettings(), c.validateDrivers())
}

func (c *Config) validateSettings() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state directory is empty"))
	}
	if err := auth.CheckLifetime(c.Lifetime); err != nil {
		errs = append(errs, err)
	}
	if n := len(c.SocketRoot) + len(socketSuffix); c.SocketRoot != "" && n > maxSocketPath {
		errs = append(errs, fmt.Errorf("socket root %s: its sandbox sockets would be %d bytes long, over the %d-byte limit of unix socket paths; use a shorter state directory (--state-dir)", c.SocketRoot, n, maxSocketPath))
	}
	if c.SweepInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("sweep interval %s: must be at least 10ms (--sweep-interval)", c.SweepInterval))
	}
	if c.SweepInterval > c.Lifetime/4 {
		errs = append(errs, fmt.Errorf("sweep interval %s: must be at most a quarter of the token lifetime %s, or tokens expire before they rotate (--sweep-interval, --token-lifetime)", c.SweepInterval, c.Lifetime))
	}
	if c.SweepBatch < 1 || c.WriteParallelism < 1 {
		errs = append(errs, fmt.Errorf("sweep batch %d and write parallelism %d must be positive", c.SweepBatch, c.WriteParallelism))
	}
	if c.StopGrace < 0 {
		errs = append(errs, fmt.Errorf("stop grace %s is negative (--stop-grace)", c.StopGrace))
	}
	if c.JWKSMaxAge < time.Second {
		errs = append(errs, fmt.Errorf("JWKS max-age %s: must be at least 1s (--jwks-max-age)", c.JWKSMaxAge))
	}
	if c.LeaderLease < MinLeaderLease {
		errs = append(errs, fmt.Errorf("leader lease %s: must be at least %s, as it is renewed every third of it (--leader-lease)", c.LeaderLease, MinLeaderLease))
	}
	if c.ReplicaAdvertise != "" && !store.IsPostgresDSN(c.Store) {
		errs = append(errs, fmt.Errorf("replica mode (advertised at %s) needs a Postgres store (postgres://...) that every replica shares; the store is %q", c.ReplicaAdvertise, c.Store))
	}
	if c.KeyPublishDelay < c.JWKSMaxAge {
		errs = append(errs, fmt.Errorf("key publish delay %s: must be at least the JWKS max-age %s, or verifiers that cache the JWKS refuse the new key's tokens; activate at once with `keys rotate --now` instead (--key-publish-delay, --jwks-max-age)", c.KeyPublishDelay, c.JWKSMaxAge))
	}
	return errors.Join(errs...)
}

// CheckSettings validates everything but the drivers, with defaults
// applied, so a command line can refuse bad settings before it builds
// drivers.
func (c Config) CheckSettings() error {
	c.setDefaults()
	return c.validateSettings()
}

func (c *Config) validateDrivers() error {
	var errs []error
	if len(c.Drivers) == 0 {
		errs = append(errs, errors.New("no compute driver is registered"))
	}
	if c.DefaultDriver != "" {
		if _, ok := c.Drivers[c.DefaultDriver]; !ok {
			errs = append(errs, fmt.Errorf("default driver %q is not registered (have %v)", c.DefaultDriver, driverNames(c.Drivers)))
		}
	}
	return errors.Join(errs...)
}

// CheckStateDir creates the state directory 0700, or refuses an existing
// one that others can read or write (ErrInsecure): it
// holds signing keys and tokens.
// Open runs it; a command line runs it first, so that nothing (a driver's
// own directories) is created in a directory that Open would refuse.
func CheckStateDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return fmt.Errorf("create state directory %s: %w", abs, err)
		}
		return os.Chmod(abs, 0o700)
	case err != nil:
		return fmt.Errorf("state directory %s: %w", abs, err)
	case !fi.IsDir():
		return fmt.Errorf("state directory %s is not a directory", abs)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%w: state directory %s has mode %04o: it holds signing keys and tokens, so it must be private; run: chmod 700 %s",
			ErrInsecure, abs, fi.Mode().Perm(), abs)
	}
	return nil
}

func driverNames(m map[string]driver.Driver) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
