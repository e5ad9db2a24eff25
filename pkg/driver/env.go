package driver

import (
	"sort"
	"strings"
)

// The environment contract between a driver and the supervisor (DESIGN.md §8).
const (
	EnvPrefix      = "SANDKEY_"
	EnvAuthMode    = "SANDKEY_AUTH_MODE"    // dir | static | k8s-sa
	EnvSandboxID   = "SANDKEY_SANDBOX_ID"   // the sandbox the supervisor serves
	EnvInstanceID  = "SANDKEY_INSTANCE_ID"  // this start of the sandbox
	EnvTokenDir    = "SANDKEY_TOKEN_DIR"    // default DefaultTokenDir
	EnvGateway     = "SANDKEY_GATEWAY"      // unix://, vsock://, tcp://, tls://
	EnvIssuer      = "SANDKEY_ISSUER"       // expected iss
	EnvAudience    = "SANDKEY_AUDIENCE"     // expected aud
	EnvTrustDomain = "SANDKEY_TRUST_DOMAIN" // expected SPIFFE trust domain
	EnvStatusFile  = "SANDKEY_STATUS_FILE"  // where the supervisor writes its status
	EnvToken       = "SANDKEY_TOKEN"        // static mode only
	EnvTokenFile   = "SANDKEY_TOKEN_FILE"   // static mode only
	// EnvGatewayCA is the PEM bundle a supervisor trusts for a tls://
	// gateway (the system's roots when empty).
	EnvGatewayCA = "SANDKEY_GATEWAY_CA"

	DefaultTokenDir = "/run/sandkey/auth"
	// ServiceAccountTokenDir is where the kubernetes driver mounts the
	// pod's projected ServiceAccount token (file ServiceAccountTokenFile),
	// the token directory of auth mode k8s-sa.
	ServiceAccountTokenDir  = "/run/sandkey/k8s-sa"
	ServiceAccountTokenFile = "token"
	DefaultGateway          = "unix:///run/sandkey/gw/gw.sock"
	SocketName              = "gw.sock"
)

// StripReserved returns env without any SANDKEY_* variable: only the
// gateway sets those, so a user cannot point a supervisor at another
// sandbox's identity or gateway.
func StripReserved(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		if strings.HasPrefix(strings.ToUpper(k), EnvPrefix) {
			continue
		}
		out[k] = v
	}
	return out
}

// Environ merges the user's environment (reserved names stripped) with the
// gateway's SANDKEY_* variables into KEY=VALUE form, sorted for stable
// output.
func Environ(user, sandbox map[string]string) []string {
	merged := StripReserved(user)
	for k, v := range sandbox {
		merged[k] = v
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
