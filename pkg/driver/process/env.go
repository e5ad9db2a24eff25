package process

import (
	"path/filepath"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
)

// The environment a sandbox process gets when its spec sets none of these:
// what container runtimes give a container. The gateway's own environment
// is never inherited.
const (
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	defaultHome = "/"
)

// environ builds the supervisor's environment: the user's variables
// (SANDKEY_* stripped), PATH and HOME when the user set none, the gateway's
// SANDKEY_* variables, and the two that only this driver knows: the token
// directory, which the process reads in place on the host, and the
// sandbox's attested socket. These two win over SandboxEnv, whose defaults
// name paths inside a container.
func environ(spec driver.Spec) []string {
	user := driver.StripReserved(spec.Env)
	if _, ok := user["PATH"]; !ok {
		user["PATH"] = defaultPath
	}
	if _, ok := user["HOME"]; !ok {
		user["HOME"] = defaultHome
	}
	sandbox := make(map[string]string, len(spec.SandboxEnv)+2)
	for k, v := range spec.SandboxEnv {
		sandbox[k] = v
	}
	sandbox[guest.EnvTokenDir] = spec.TokenDir
	sandbox[guest.EnvGateway] = gatewayAddress(spec.SocketDir)
	if spec.StateDir != "" {
		// Beside the sandbox's log, where an operator looks first.
		sandbox[guest.EnvStatusFile] = filepath.Join(spec.StateDir, StatusFileName)
	}
	return driver.Environ(user, sandbox)
}

// StatusFileName is the supervisor's status file in the sandbox's state
// directory.
const StatusFileName = "status.json"

// gatewayAddress is the dial address of the socket in socketDir.
func gatewayAddress(socketDir string) string {
	return "unix://" + filepath.Join(socketDir, guest.SocketName)
}
