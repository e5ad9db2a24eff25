package gatewaycmd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/admin"
)

// writeSelfSignedCert writes a certificate for 127.0.0.1 that is its own
// CA, and its key, into dir.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gatewaycmd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
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
	code, _, stderr = runCLI(t, "--admin", addr, "--admin-ca", cert, "keys", "list")
	if code != ExitFailure || !strings.Contains(stderr, "admin token") {
		t.Errorf("keys list without a token: exit %d, stderr %q", code, stderr)
	}
}
