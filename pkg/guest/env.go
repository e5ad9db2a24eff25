package guest

// The environment contract between a driver and the supervisor (DESIGN.md
// §8). Drivers strip every EnvPrefix variable a user gives: only the
// gateway and its driver set them.
const (
	EnvPrefix      = "SANDKEY_"
	EnvAuthMode    = "SANDKEY_AUTH_MODE"    // ModeDir | ModeStatic | ModeK8sSA
	EnvSandboxID   = "SANDKEY_SANDBOX_ID"   // the sandbox the supervisor serves
	EnvInstanceID  = "SANDKEY_INSTANCE_ID"  // this start of the sandbox
	EnvTokenDir    = "SANDKEY_TOKEN_DIR"    // default DefaultTokenDir
	EnvGateway     = "SANDKEY_GATEWAY"      // unix://, vsock://, tcp://, tls://; default DefaultGateway
	EnvIssuer      = "SANDKEY_ISSUER"       // expected iss
	EnvAudience    = "SANDKEY_AUDIENCE"     // expected aud
	EnvTrustDomain = "SANDKEY_TRUST_DOMAIN" // expected SPIFFE trust domain
	EnvStatusFile  = "SANDKEY_STATUS_FILE"  // where the supervisor writes its status
	EnvToken       = "SANDKEY_TOKEN"        // ModeStatic only
	EnvTokenFile   = "SANDKEY_TOKEN_FILE"   // ModeStatic only
	// EnvGatewayCA is the PEM bundle a supervisor trusts for a tls://
	// gateway (the system's roots when empty).
	EnvGatewayCA = "SANDKEY_GATEWAY_CA"
	// EnvUser is the user the supervisor runs the workload and execs as
	// (its --user flag): name, uid, uid:gid or name:group.
	EnvUser = "SANDKEY_USER"
)

// Auth modes, the values of EnvAuthMode (DESIGN.md §8).
const (
	// ModeDir: a token directory the gateway writes, read-only in the
	// sandbox, and a session on an attested channel.
	ModeDir = "dir"
	// ModeStatic: one token from EnvToken or EnvTokenFile, read once.
	ModeStatic = "static"
	// ModeK8sSA: a projected ServiceAccount token (ServiceAccountTokenDir),
	// exchanged for sandkey tokens on the gateway's shared TLS listener.
	ModeK8sSA = "k8s-sa"
)
