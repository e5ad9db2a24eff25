package supervisor

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/guest"
)

// gatewaySocket returns a path where a unix socket listens until t ends.
func gatewaySocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sk") // short: a unix socket lives in it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "gw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return path
}

func TestConfigCheckRefusesWhatItCannotServeWithItsExitCode(t *testing.T) {
	tokenDir := t.TempDir()
	notDir := filepath.Join(tokenDir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	gw := "unix://" + gatewaySocket(t)
	argv := []string{"true"}
	for _, tc := range []struct {
		name string
		cfg  Config
		code int
		want string // in the error
	}{
		{"no command", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: tokenDir, Gateway: gw}, ExitUsage, "no workload"},
		{"no sandbox id", Config{Mode: guest.ModeDir, TokenDir: tokenDir, Gateway: gw, Argv: argv}, ExitConfig, "SANDKEY_SANDBOX_ID"},
		{"no mode", Config{SandboxID: "sb", Argv: argv}, ExitConfig, "no auth mode"},
		{"unknown mode", Config{Mode: "kerberos", SandboxID: "sb", Argv: argv}, ExitConfig, `"kerberos"`},
		{"dir: no token directory", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: filepath.Join(tokenDir, "missing"), Gateway: gw, Argv: argv},
			ExitConfig, "does not exist"},
		{"dir: token directory is a file", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: notDir, Gateway: gw, Argv: argv},
			ExitConfig, "not a directory"},
		{"dir: no gateway socket", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: tokenDir, Gateway: "unix://" + filepath.Join(tokenDir, "gw.sock"), Argv: argv},
			ExitUnavailable, "gateway socket"},
		{"dir: gateway socket is a file", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: tokenDir, Gateway: "unix://" + notDir, Argv: argv},
			ExitUnavailable, "not a socket"},
		{"static: neither token nor file", Config{Mode: guest.ModeStatic, SandboxID: "sb", Gateway: gw, Argv: argv},
			ExitConfig, "exactly one of"},
		{"static: both token and file", Config{Mode: guest.ModeStatic, SandboxID: "sb", StaticToken: "t", TokenFile: notDir, Gateway: gw, Argv: argv},
			ExitConfig, "exactly one of"},
		{"static: no gateway socket", Config{Mode: guest.ModeStatic, SandboxID: "sb", StaticToken: "t", Gateway: "unix://" + filepath.Join(tokenDir, "gw.sock"), Argv: argv},
			ExitUnavailable, "gateway socket"},
		// The projected ServiceAccount token is the sandbox's root
		// credential: it must not cross a network in clear.
		{"k8s-sa: plaintext gateway off loopback", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: tokenDir, Gateway: "tcp://10.96.0.10:7443", Argv: argv},
			ExitConfig, "tls://"},
		{"k8s-sa: plaintext gateway by name", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: tokenDir, Gateway: "tcp://sandkey-gateway.sandkey.svc:7443", Argv: argv},
			ExitConfig, "tls://"},
		{"k8s-sa: unix gateway", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: tokenDir, Gateway: gw, Argv: argv},
			ExitConfig, "tls://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Check()
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Check = %v, want a *ConfigError", err)
			}
			if ce.Code != tc.code {
				t.Errorf("exit code = %d, want %d (%v)", ce.Code, tc.code, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestConfigCheckAcceptsEachModeConfiguredWhole(t *testing.T) {
	gw := "unix://" + gatewaySocket(t)
	argv := []string{"true"}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"dir", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: t.TempDir(), Gateway: gw, Argv: argv}},
		{"dir over TCP", Config{Mode: guest.ModeDir, SandboxID: "sb", TokenDir: t.TempDir(), Gateway: "dns:///gateway:7443", Argv: argv}},
		{"static token", Config{Mode: guest.ModeStatic, SandboxID: "sb", StaticToken: "t", Gateway: gw, Argv: argv}},
		{"static token file", Config{Mode: guest.ModeStatic, SandboxID: "sb", TokenFile: "/run/token", Gateway: gw, Argv: argv}},
		{"k8s-sa", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: t.TempDir(), Gateway: "tls://sandkey-gateway.sandkey.svc:7443", Argv: argv}},
		{"k8s-sa, plaintext on loopback", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: t.TempDir(), Gateway: "tcp://127.0.0.1:7443", Argv: argv}},
		{"k8s-sa, plaintext on IPv6 loopback", Config{Mode: guest.ModeK8sSA, SandboxID: "sb", TokenDir: t.TempDir(), Gateway: "tcp://[::1]:7443", Argv: argv}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Check(); err != nil {
				t.Errorf("Check = %v, want nil", err)
			}
		})
	}
}
