package gatewaycmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeRefusesPeerSettingsItCannotUse(t *testing.T) {
	clearAdminEnv(t)
	dir := t.TempDir()
	cert, key := writeSelfSignedCert(t, dir)
	token, notPEM := filepath.Join(dir, "admin.token"), filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(token, []byte("s3cret-admin-token-for-tests\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	adminTCP := []string{"--admin-tcp", "127.0.0.1:0", "--admin-tls-cert", cert, "--admin-tls-key", key, "--admin-token-file", token}
	tests := []struct {
		name string
		env  string // SANDKEY_PEER_CA
		args []string
		want string
	}{
		{"peer CA without --admin-tcp", "", []string{"--peer-ca", cert}, "set --admin-tcp"},
		{"peer CA that is no PEM bundle", "", append([]string{"--peer-ca", notPEM}, adminTCP...), "no PEM certificate"},
		{"peer CA from the environment, missing", filepath.Join(dir, "missing.pem"), adminTCP, "missing.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SANDKEY_PEER_CA", tt.env)
			// Short: the sandbox socket paths under it are checked first.
			base, err := os.MkdirTemp("/tmp", "skpeer")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			state := filepath.Join(base, "s")
			args := append([]string{"--state-dir", state, "serve", "--http-addr", "", "--supervisor", "/usr/bin/env"}, tt.args...)
			code, _, stderr := runCLI(t, args...)
			if code != ExitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("serve %q: exit %d, stderr %q; want ExitUsage saying %q", tt.args, code, stderr, tt.want)
			}
			if _, err := os.Stat(state); !os.IsNotExist(err) {
				t.Errorf("serve refused its settings after touching the state directory (%v)", err)
			}
		})
	}
}
