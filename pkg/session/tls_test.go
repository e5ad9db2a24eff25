package session

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/testpki"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool
// trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, pool, err := testpki.SelfSignedTLS("gateway.test", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

func TestTLSListenerAndAttestedSocketsShareOneServer(t *testing.T) {
	e := newEnv(t, envConfig{})
	cert, pool := selfSigned(t)
	g := grpc.NewServer(ServerOptions(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))...)
	e.srv.Register(g)
	ls := NewListeners(g, nil)
	defer func() { ls.Close(); g.Stop() }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.AddShared("tls", l); err != nil {
		t.Fatal(err)
	}
	tok := e.mint("sb-tls")
	path, err := ls.AddSandbox(filepath.Join(e.dir, "tls-sock"), "sb-tls")
	if err != nil {
		t.Fatal(err)
	}

	src := e.newSource("sb-tls", tok)
	e.startClient(ClientConfig{Target: "tls://" + l.Addr().String(), SandboxID: "sb-tls", Source: src,
		DialOptions: []DialOption{WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}})
	eventually(t, "session over TLS", func() bool { return e.srv.Connected("sb-tls") })
	next := e.mint("sb-tls")
	e.srv.Push("sb-tls")
	eventually(t, "push over TLS", func() bool { return genOf(src) == next.Gen() })

	// The attested socket on the same server skips the TLS handshake.
	r := openRaw(t, dialRaw(t, "unix://"+path), "")
	r.hello("sb-tls", next.Gen())
	r.accepted()

	// A plaintext client cannot talk to the TLS listener.
	rpc := dialRaw(t, "tcp://"+l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream, err := rpc.Connect(callContext(ctx, next.Raw(), "sb-tls"))
	if err == nil {
		_, err = stream.Recv()
	}
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("plaintext call to the TLS listener: %v, want it to fail", err)
	}
}

func TestPushSignedByAJustRotatedKeyVerifiesWithItsJWKS(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-keys")
	src := e.newSource("sb-keys", tok)
	e.startClient(ClientConfig{Target: target, SandboxID: "sb-keys", Source: src})
	eventually(t, "session", func() bool { return e.srv.Connected("sb-keys") })

	key, err := auth.GenerateKey(rand.Reader, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.keys.Rotate(key) // the source has never seen this key
	next := e.mint("sb-keys")
	e.srv.Push("sb-keys")
	eventually(t, "token signed by the new key in the source", func() bool { return genOf(src) == next.Gen() })
}
