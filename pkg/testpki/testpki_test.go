package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// handshake serves cert on a loopback listener and dials it trusting
// pool, with a client certificate when client is set; it returns the
// client's handshake error.
func handshake(t *testing.T, cert tls.Certificate, pool *x509.CertPool, clientCAs *x509.CertPool, client *tls.Certificate) error {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		_ = c.Close()
	}()
	defer func() { _ = l.Close(); <-done }()
	ccfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if client != nil {
		ccfg.Certificates = []tls.Certificate{*client}
	}
	c, err := tls.Dial("tcp", l.Addr().String(), ccfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// With TLS 1.3 a refused client certificate shows on the first read.
	_, err = c.Read(make([]byte, 1))
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

func loopback() net.IP { return net.IPv4(127, 0, 0, 1) }

func TestAServerCertificateIsTrustedThroughItsAuthorityOnly(t *testing.T) {
	ca, err := NewAuthority("test ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(Leaf{CN: "server", Server: true, IPs: []net.IP{loopback()}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cert, ca.Pool(), nil, nil); err != nil {
		t.Fatalf("dial trusting the authority: %v", err)
	}
	other, err := NewAuthority("other ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cert, other.Pool(), nil, nil); err == nil {
		t.Fatal("dial trusting another authority succeeded")
	}
}

func TestAClientCertificateCarriesItsSubjectAndIsRefusedAsAServer(t *testing.T) {
	ca, err := NewAuthority("test ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(Leaf{CN: "alice", Orgs: []string{"admins"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if client.Leaf.Subject.CommonName != "alice" || len(client.Leaf.Subject.Organization) != 1 || client.Leaf.Subject.Organization[0] != "admins" {
		t.Fatalf("subject %v, want CN alice, O admins", client.Leaf.Subject)
	}
	server, pool, err := SelfSignedTLS("server", loopback())
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, server, pool, ca.Pool(), &client); err != nil {
		t.Fatalf("client certificate refused: %v", err)
	}
	// A client certificate is not for serving.
	if err := handshake(t, client, ca.Pool(), nil, nil); err == nil {
		t.Fatal("a client certificate served and was trusted")
	}
}

func TestASelfSignedCertificateIsItsOwnPin(t *testing.T) {
	dir := t.TempDir()
	s, err := WriteSelfSigned(dir, loopback())
	if err != nil {
		t.Fatal(err)
	}
	if s.CAFile != s.CertFile {
		t.Fatalf("CA file %s, want the certificate itself, %s", s.CAFile, s.CertFile)
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cert, s.Pool, nil, nil); err != nil {
		t.Fatalf("dial pinning the certificate: %v", err)
	}
	other, _, err := SelfSignedTLS("other", loopback())
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, other, s.Pool, nil, nil); err == nil {
		t.Fatal("another self-signed certificate was trusted")
	}
}

func TestWriteServingWritesOwnerOnlyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	s, err := WriteServing(dir, loopback())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{s.CAFile, s.CertFile, s.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cert, s.Pool, nil, nil); err != nil {
		t.Fatalf("dial trusting the written CA: %v", err)
	}
}
