package admin

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/bearer"
)

// PeerConfig is how a replica calls the operator API of the other
// replicas sharing its store.
type PeerConfig struct {
	// TokenFile holds the operator token, the one of --admin-token-file:
	// replicas share it, and present it to each other.
	TokenFile string
	// CAFile is a PEM bundle of the CAs that sign the replicas'
	// certificates (--peer-ca). When empty, PinFile's certificate is
	// pinned instead.
	CAFile string
	// PinFile is this replica's own operator API certificate
	// (--admin-tls-cert): without CAFile, a peer must present exactly
	// this certificate, as replicas sharing one certificate do.
	PinFile string
}

// peerIdle is how long a connection to a peer may go unused before it is
// closed: replicas come and go with new addresses, and a connection to
// one that has gone would otherwise stay for the life of the process.
const peerIdle = 10 * time.Minute

// Peers holds one gRPC client connection per peer replica address,
// opened on first use and closed after peerIdle unused, or by Close.
// The admin servers of one gateway share one Peers; its owner closes it
// after those servers have stopped.
type Peers struct {
	creds credentials.TransportCredentials
	token string
	now   func() time.Time

	mu     sync.Mutex
	conns  map[string]*peerConn
	closed bool
}

// peerConn is the connection to one peer address.
type peerConn struct {
	conn     *grpc.ClientConn
	client   adminpb.AdminClient
	calls    int // forwarded calls using it now
	lastUsed time.Time
}

// NewPeers reads the operator token and the peer trust (a CA bundle, or
// the pinned certificate) and returns Peers that have not dialed yet.
func NewPeers(cfg PeerConfig) (*Peers, error) {
	if cfg.TokenFile == "" {
		return nil, errors.New("calling peer replicas needs the operator token: set --admin-token-file")
	}
	token, err := readToken(cfg.TokenFile)
	if err != nil {
		return nil, err
	}
	tcfg, err := peerTLS(cfg)
	if err != nil {
		return nil, err
	}
	return &Peers{
		creds: credentials.NewTLS(tcfg),
		token: string(token),
		now:   time.Now,
		conns: make(map[string]*peerConn),
	}, nil
}

// peerTLS verifies a peer against the CA bundle when there is one, else
// against the pinned certificate, byte for byte (its host names are then
// not checked: replicas sharing one certificate rarely list every pod's
// address in it).
func peerTLS(cfg PeerConfig) (*tls.Config, error) {
	tcfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --peer-ca: %w", err)
		}
		tcfg.RootCAs = x509.NewCertPool()
		if !tcfg.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--peer-ca %s holds no PEM certificate", cfg.CAFile)
		}
		return tcfg, nil
	}
	if cfg.PinFile == "" {
		return nil, errors.New("peer replicas are verified against --peer-ca, or else against this replica's own --admin-tls-cert: set one")
	}
	pinned, err := leafDER(cfg.PinFile)
	if err != nil {
		return nil, err
	}
	// Verification is the pin below, not the default chain check.
	tcfg.InsecureSkipVerify = true
	tcfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 || !bytes.Equal(raw[0], pinned) {
			return fmt.Errorf("peer certificate is not the pinned --admin-tls-cert %s: give replicas one certificate, or set --peer-ca", cfg.PinFile)
		}
		return nil
	}
	return tcfg, nil
}

// leafDER is the first certificate of a PEM file.
func leafDER(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the certificate to pin for peers: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("certificate to pin for peers %s holds no PEM certificate", path)
		}
		if b.Type == "CERTIFICATE" {
			return b.Bytes, nil
		}
	}
}

// acquire returns the client of the peer at addr, dialing it (lazily:
// grpc connects on the first call) unless a connection is open; call
// release when the forwarded call has ended.
func (p *Peers) acquire(addr string) (adminpb.AdminClient, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errors.New("the gateway is stopping")
	}
	now := p.now()
	p.pruneLocked(now)
	pc, ok := p.conns[addr]
	if !ok {
		conn, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(p.creds),
			grpc.WithPerRPCCredentials(bearer.Credentials{Token: bearer.Fixed(p.token), RequireTLS: true}))
		if err != nil {
			return nil, nil, fmt.Errorf("peer operator API at %s: %w", addr, err)
		}
		pc = &peerConn{conn: conn, client: adminpb.NewAdminClient(conn)}
		p.conns[addr] = pc
	}
	pc.calls++
	pc.lastUsed = now
	var once sync.Once
	release := func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			pc.calls--
			pc.lastUsed = p.now()
		})
	}
	return pc.client, release, nil
}

// pruneLocked closes the connections no call has used for peerIdle.
func (p *Peers) pruneLocked(now time.Time) {
	for addr, pc := range p.conns {
		if pc.calls == 0 && now.Sub(pc.lastUsed) >= peerIdle {
			pc.conn.Close()
			delete(p.conns, addr)
		}
	}
}

// open is how many peer connections are open.
func (p *Peers) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close closes every peer connection, ending the calls still using them;
// later calls for a peer fail. It is safe to call more than once.
func (p *Peers) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for addr, pc := range p.conns {
		if err := pc.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close peer connection %s: %w", addr, err))
		}
		delete(p.conns, addr)
	}
	p.closed = true
	return errors.Join(errs...)
}
