package supervisor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
)

// Exit codes of the supervisor's own failures. A workload's own code is
// passed through unchanged, so these are chosen from sysexits.h, which few
// workloads use.
const (
	ExitUsage       = 64 // EX_USAGE: bad flags or no command
	ExitUnavailable = 69 // EX_UNAVAILABLE: the gateway's socket is not there
	ExitSoftware    = 70 // EX_SOFTWARE: an internal failure
	ExitConfig      = 78 // EX_CONFIG: a mode it cannot serve, a missing token directory
)

// Config is the supervisor's configuration, from flags and SANDKEY_*
// variables set by the driver.
type Config struct {
	Mode         string
	SandboxID    string
	InstanceID   string
	TokenDir     string
	Gateway      string
	Issuer       string
	Audience     string
	TrustDomain  string
	StatusFile   string
	StaticToken  string // static mode: the token itself
	TokenFile    string // static mode: a file holding it
	GatewayCA    string // PEM bundle trusted for a tls:// gateway; system roots when empty
	PollInterval time.Duration
	Grace        time.Duration
	// User runs the workload and exec'd commands as that user, in any
	// form of an image's USER (name, uid, uid:gid, name:group), resolved
	// against the sandbox's /etc/passwd and /etc/group at start. Empty
	// keeps the supervisor's own.
	User   string
	VMInit string // auto | on | off
	// Now is the clock of token expiry (k8s-sa); time.Now when nil.
	Now  func() time.Time
	Argv []string
}

// ConfigError is a configuration the supervisor cannot serve; it exits
// with Code.
type ConfigError struct {
	Code int
	Err  error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(code int, format string, args ...any) error {
	return &ConfigError{Code: code, Err: fmt.Errorf(format, args...)}
}

// Check validates cfg for its mode, looking at the file system where the
// mode needs it.
func (c *Config) Check() error {
	if len(c.Argv) == 0 {
		return configErr(ExitUsage, "no workload: run as `supervisor [flags] -- command args...`")
	}
	if c.SandboxID == "" {
		return configErr(ExitConfig, "no sandbox id: the driver sets %s", guest.EnvSandboxID)
	}
	switch c.Mode {
	case guest.ModeDir:
		if err := checkTokenDir(c.TokenDir); err != nil {
			return err
		}
		return checkGateway(c.Gateway)
	case guest.ModeStatic:
		if (c.StaticToken == "") == (c.TokenFile == "") {
			return configErr(ExitConfig, "auth mode static needs exactly one of %s or %s", guest.EnvToken, guest.EnvTokenFile)
		}
		return checkGateway(c.Gateway)
	case guest.ModeK8sSA:
		if err := checkTokenDir(c.TokenDir); err != nil {
			return err
		}
		if !strings.HasPrefix(c.Gateway, "tls://") && !strings.HasPrefix(c.Gateway, "tcp://") {
			return configErr(ExitConfig, "auth mode %s needs the gateway's shared listener: want a tls:// gateway address, not %q", guest.ModeK8sSA, c.Gateway)
		}
		// The exchange sends the projected ServiceAccount token, the
		// sandbox's root credential, and the gateway serves plaintext
		// on loopback only: anywhere else tcp:// would only hand both
		// tokens, in clear, to whoever answers at that address.
		if addr, ok := strings.CutPrefix(c.Gateway, "tcp://"); ok && !isLoopback(addr) {
			return configErr(ExitConfig, "auth mode %s would send the pod's ServiceAccount token to %q in clear: want a tls:// gateway address (tcp:// is for loopback only)", guest.ModeK8sSA, c.Gateway)
		}
		return nil
	case "":
		return configErr(ExitConfig, "no auth mode: the driver sets %s (dir, static, k8s-sa)", guest.EnvAuthMode)
	default:
		return configErr(ExitConfig, "auth mode %q is unknown; want dir, static or k8s-sa", c.Mode)
	}
}

// dialOptions are the session's and the exchange's dial options: the
// gateway's CA bundle, when the driver gave one, for a tls:// gateway.
func (c *Config) dialOptions() ([]session.DialOption, error) {
	if c.GatewayCA == "" {
		return nil, nil
	}
	if !strings.HasPrefix(c.Gateway, "tls://") {
		return nil, configErr(ExitConfig, "%s is set but the gateway %q is not tls://", guest.EnvGatewayCA, c.Gateway)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.GatewayCA)) {
		return nil, configErr(ExitConfig, "%s holds no PEM certificate", guest.EnvGatewayCA)
	}
	return []session.DialOption{session.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}, nil
}

func checkTokenDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return configErr(ExitConfig, "token directory %s does not exist: the driver must mount it (auth mode dir)", dir)
	case err != nil:
		return configErr(ExitConfig, "token directory %s: %v", dir, err)
	case !fi.IsDir():
		return configErr(ExitConfig, "token directory %s is not a directory (a mounted file goes stale: mount the directory)", dir)
	}
	return nil
}

// checkGateway refuses a unix gateway socket that is not there: the
// gateway opens it before the sandbox starts, so its absence is a
// misconfiguration, not a gateway restart.
// isLoopback reports whether host:port names a loopback address.
func isLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkGateway(target string) error {
	path, ok := strings.CutPrefix(target, "unix://")
	if !ok {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return configErr(ExitUnavailable, "gateway socket %s: %v (is the gateway's socket directory mounted?)", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return configErr(ExitUnavailable, "gateway socket %s is not a socket", path)
	}
	return nil
}
