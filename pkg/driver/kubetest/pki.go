package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certLifetime is how long every certificate of a cluster lives: longer
// than any test run, short enough that a leaked file is worthless soon.
const certLifetime = 24 * time.Hour

// authority is the cluster's certificate authority: it signs the API
// server's serving certificate and the client certificates of ConfigFor.
type authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// newAuthority makes a fresh self-signed CA.
func newAuthority() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "sandkey-kubetest-ca"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der)}, nil
}

// issue signs a leaf certificate: a server certificate for ips and dnsNames
// when server is true, else a client certificate whose subject Kubernetes
// reads as user (CN) and groups (O). It returns the certificate and key in
// PEM.
func (a *authority) issue(cn string, orgs []string, server bool, ips []net.IP, dnsNames []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", cn, err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", cn, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key for %s: %w", cn, err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// writeServiceAccountKeys writes a fresh ECDSA P-256 key pair, the one the
// API server signs ServiceAccount tokens with (ES256), as PEM files.
func writeServiceAccountKeys(privPath, pubPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate ServiceAccount key: %w", err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode ServiceAccount key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encode ServiceAccount public key: %w", err)
	}
	if err := writeFile(privPath, pemBlock("EC PRIVATE KEY", priv)); err != nil {
		return err
	}
	return writeFile(pubPath, pemBlock("PUBLIC KEY", pub))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// writeFile writes a file only its owner can read: keys and tokens live
// in these files.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ServingTLS is a CA and a serving certificate it signed, as files.
type ServingTLS struct {
	CAFile, CertFile, KeyFile string
	// Pool trusts the CA.
	Pool *x509.CertPool
}

// WriteServingTLS makes a CA of its own, as a cluster's, and a serving
// certificate it signs for ips, and writes them in dir (0600): ca.pem,
// tls.crt and tls.key. For what the tests serve beside a cluster: a
// gateway's session and operator listeners.
func WriteServingTLS(dir string, ips ...net.IP) (ServingTLS, error) {
	ca, err := newAuthority()
	if err != nil {
		return ServingTLS{}, err
	}
	cert, key, err := ca.issue("sandkey gateway", nil, true, ips, nil)
	if err != nil {
		return ServingTLS{}, err
	}
	s := ServingTLS{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		Pool: x509.NewCertPool()}
	for path, data := range map[string][]byte{s.CAFile: ca.certPEM, s.CertFile: cert, s.KeyFile: key} {
		if err := writeFile(path, data); err != nil {
			return ServingTLS{}, err
		}
	}
	s.Pool.AddCert(ca.cert)
	return s, nil
}
