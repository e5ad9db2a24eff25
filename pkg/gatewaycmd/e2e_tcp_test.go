package gatewaycmd

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/testpki"
)

// writeSelfSignedCert writes a certificate for 127.0.0.1 that is its own
// CA, and its key, into dir.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	s, err := testpki.WriteSelfSigned(dir, net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	return s.CertFile, s.KeyFile
}

func TestCLIReachesAGatewayOverTLSWithTheAdminToken(t *testing.T) {
	clearAdminEnv(t)
	tg := startTestGateway(t)
	dir := t.TempDir()
	cert, key := writeSelfSignedCert(t, dir)
	token, wrong := filepath.Join(dir, "admin.token"), filepath.Join(dir, "wrong.token")
	for path, value := range map[string]string{token: "s3cret-admin-token-for-tests\n", wrong: "not-the-admin-token-at-all"} {
		if err := os.WriteFile(path, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, l, err := admin.ListenTCP("127.0.0.1:0", admin.TCPConfig{CertFile: cert, KeyFile: key, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	admin.Register(srv, tg.gw, zap.NewNop())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	addr := l.Addr().String()

	code, stdout, stderr := runCLI(t, "--admin", addr, "--admin-token-file", token, "--admin-ca", cert, "keys", "list")
	if code != ExitOK || !strings.Contains(stdout, "active") {
		t.Fatalf("keys list over TLS: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "--admin", addr, "--admin-token-file", wrong, "--admin-ca", cert, "keys", "list")
	if code != ExitFailure || !strings.Contains(stderr, "invalid admin token") || !strings.Contains(stderr, "--admin-token-file") {
		t.Errorf("keys list with a wrong token: exit %d, stderr %q", code, stderr)
	}
	// No token file is a usage error, found before any call.
	code, _, stderr = runCLI(t, "--admin", addr, "--admin-ca", cert, "keys", "list")
	if code != ExitUsage || !strings.Contains(stderr, "--admin-token-file") {
		t.Errorf("keys list without a token: exit %d, stderr %q", code, stderr)
	}
}
