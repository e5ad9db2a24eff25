// Package testpki makes the certificates tests serve and dial with: a
// certificate authority that signs server and client certificates (a test
// cluster's), and self-signed server certificates that are their own CA
// (a gateway's operator listener, pinned by its peers). Keys are ECDSA
// P-256; files are written 0600.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

// Lifetime is how long every certificate lives: longer than any test
// run, short enough that a leaked file is worthless soon.
const Lifetime = 24 * time.Hour

// Authority is a certificate authority of its own.
type Authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the authority's certificate, for clients to trust.
	CertPEM []byte
}

// NewAuthority makes a fresh self-signed CA named cn.
func NewAuthority(cn string) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for CA %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(Lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %s: %w", cn, err)
	}
	return &Authority{cert: cert, key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Pool returns a pool that trusts the authority.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// Leaf says what a certificate is for.
type Leaf struct {
	// CN and Orgs are the subject; Kubernetes reads a client certificate's
	// as its user and groups.
	CN   string
	Orgs []string
	// Server makes a server certificate for IPs and DNSNames; otherwise it
	// is a client certificate.
	Server   bool
	IPs      []net.IP
	DNSNames []string
}

// Issue signs a certificate for l and returns it and its key in PEM.
func (a *Authority) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	return issue(l, a.cert, a.key)
}

// SelfSigned returns a server certificate for ips that is its own CA, and
// its key, in PEM: trusting the certificate is pinning it.
func SelfSigned(cn string, ips ...net.IP) (certPEM, keyPEM []byte, err error) {
	return issue(Leaf{CN: cn, Server: true, IPs: ips}, nil, nil)
}

// SelfSignedTLS is SelfSigned as a tls.Certificate, with a pool that
// trusts it.
func SelfSignedTLS(cn string, ips ...net.IP) (tls.Certificate, *x509.CertPool, error) {
	certPEM, keyPEM, err := SelfSigned(cn, ips...)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load self-signed %s: %w", cn, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool, nil
}

// issue signs l with parent's key, or makes it its own CA when parent is
// nil.
func issue(l Leaf, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", l.CN, err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if l.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CN, Organization: l.Orgs},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(Lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  l.IPs,
		DNSNames:     l.DNSNames,
	}
	if parent == nil {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", l.CN, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key for %s: %w", l.CN, err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// Serving is a server certificate and its key as files, and the
// certificate clients trust: the CA that signed it, or for a self-signed
// one the certificate itself.
type Serving struct {
	CAFile, CertFile, KeyFile string
	// Pool trusts CAFile.
	Pool *x509.CertPool
}

// WriteServing makes a CA of its own and a server certificate it signs for
// ips, and writes them in dir: ca.pem, tls.crt and tls.key.
func WriteServing(dir string, ips ...net.IP) (Serving, error) {
	ca, err := NewAuthority("sandkey test CA")
	if err != nil {
		return Serving{}, err
	}
	cert, key, err := ca.Issue(Leaf{CN: "sandkey gateway", Server: true, IPs: ips})
	if err != nil {
		return Serving{}, err
	}
	s := Serving{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		Pool: ca.Pool()}
	return s, writeAll(map[string][]byte{s.CAFile: ca.CertPEM, s.CertFile: cert, s.KeyFile: key})
}

// WriteSelfSigned writes a self-signed server certificate for ips and its
// key in dir: tls.crt, which is also CAFile, and tls.key.
func WriteSelfSigned(dir string, ips ...net.IP) (Serving, error) {
	cert, key, err := SelfSigned("sandkey gateway", ips...)
	if err != nil {
		return Serving{}, err
	}
	s := Serving{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Pool: x509.NewCertPool()}
	s.CAFile = s.CertFile
	s.Pool.AppendCertsFromPEM(cert)
	return s, writeAll(map[string][]byte{s.CertFile: cert, s.KeyFile: key})
}

// WriteFile writes a file only its owner can read, making its directory:
// keys and tokens live in these files.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeAll(files map[string][]byte) error {
	for path, data := range files {
		if err := WriteFile(path, data); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
