package guest

// Paths inside a sandbox. A process sandbox has no paths of its own: its
// driver sets EnvTokenDir, EnvGateway and EnvStatusFile to host paths.
const (
	// DefaultTokenDir is where a container or VM sees its token
	// directory, read-only (DESIGN.md §4), and the supervisor's default.
	DefaultTokenDir = "/run/sandkey/auth"
	// ServiceAccountTokenDir is where the kubernetes driver mounts the
	// pod's projected ServiceAccount token (file ServiceAccountTokenFile),
	// the token directory of ModeK8sSA.
	ServiceAccountTokenDir  = "/run/sandkey/k8s-sa"
	ServiceAccountTokenFile = "token"
	// SocketDir is where a container sees the directory of its gateway
	// socket (file SocketName), read-only.
	SocketDir = "/run/sandkey/gw"
	// SocketName is the gateway's socket in a sandbox's socket directory,
	// on the host and in a container alike.
	SocketName = "gw.sock"
	// DefaultGateway is the session's address in a container, and the
	// supervisor's default.
	DefaultGateway = "unix://" + SocketDir + "/" + SocketName
	// StatusFile is where the supervisor of a container or VM keeps its
	// status file (EnvStatusFile): in the sandbox's own writable space,
	// never in a host directory the sandbox could fill. Operators and tests
	// read it with an engine's archive API or an exec; it holds no secret.
	StatusFile = "/run/sandkey/status.json"
	// SupervisorBinDir holds the supervisor a driver mounts, read-only,
	// into an image that does not bring its own (file SupervisorPath), and
	// makes the sandbox's entrypoint.
	SupervisorBinDir = "/run/sandkey/bin"
	SupervisorPath   = SupervisorBinDir + "/supervisor"
	// BakedSupervisor is the supervisor of the supervisor image and of
	// every image built FROM sandkey-base: an image whose entrypoint starts
	// with it runs as it always did, with nothing mounted.
	BakedSupervisor = "/supervisor"
)
