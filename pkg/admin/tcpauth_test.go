package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/testpki"
)

const testAdminToken = "correct-horse-battery-staple-42"

// stubAdminServer stands in for the gateway-backed server: these tests
// pin the transport's authentication, not what the calls do. It answers
// GetSandbox (unary) and ExecSandbox (streaming) only.
type stubAdminServer struct {
	adminpb.UnimplementedAdminServer
}

func (stubAdminServer) GetSandbox(_ context.Context, req *adminpb.GetSandboxRequest) (*adminpb.Sandbox, error) {
	return &adminpb.Sandbox{Id: "stub-id", Name: req.GetSandbox()}, nil
}

func (stubAdminServer) ExecSandbox(req *adminpb.ExecSandboxRequest, stream grpc.ServerStreamingServer[adminpb.ExecSandboxResponse]) error {
	if err := stream.Send(&adminpb.ExecSandboxResponse{Data: &adminpb.ExecSandboxResponse_Stdout{Stdout: []byte("hi\n")}}); err != nil {
		return err
	}
	return stream.Send(&adminpb.ExecSandboxResponse{Data: &adminpb.ExecSandboxResponse_Exit{Exit: &adminpb.ExecExit{Code: 7}}})
}

// tlsFiles are a self-signed certificate for 127.0.0.1 (its own CA), its
// key, and an admin token file.
type tlsFiles struct {
	cert, key, token string
}

func writeTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	s, err := testpki.WriteSelfSigned(dir, net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{cert: s.CertFile, key: s.KeyFile, token: filepath.Join(dir, "admin.token")}
	writeFile(t, f.token, []byte(testAdminToken+"\n"), 0o600)
	return f
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// serveStub serves the stub on a TCP listener built by ListenTCP and
// returns its address.
func serveStub(t *testing.T, f tlsFiles) string {
	t.Helper()
	srv, l, err := ListenTCP("127.0.0.1:0", TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: f.token})
	if err != nil {
		t.Fatal(err)
	}
	adminpb.RegisterAdminServer(srv, stubAdminServer{})
	serve(t, srv, l)
	return l.Addr().String()
}

// serve runs srv on l until the test ends.
func serve(t *testing.T, srv *grpc.Server, l net.Listener) {
	t.Helper()
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
}

func dialForTest(t *testing.T, addr string, opts DialOptions) adminpb.AdminClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, closer, err := Dial(ctx, addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	return c
}

// callBoth makes one unary and one streaming call and returns their errors.
func callBoth(t *testing.T, ctx context.Context, c adminpb.AdminClient) (unary, stream error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, unary = c.GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: "web"})
	s, err := c.ExecSandbox(ctx, &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"}})
	if err != nil {
		return unary, err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return unary, nil
			}
			return unary, err
		}
	}
}

func TestTCPAcceptsTheAdminTokenOverTLS(t *testing.T) {
	f := writeTLSFiles(t)
	addr := serveStub(t, f)
	c := dialForTest(t, addr, DialOptions{TokenFile: f.token, CAFile: f.cert})
	sb, err := c.GetSandbox(context.Background(), &adminpb.GetSandboxRequest{Sandbox: "web"})
	if err != nil {
		t.Fatalf("GetSandbox with the admin token: %v", err)
	}
	if sb.GetName() != "web" {
		t.Errorf("GetSandbox answered %v", sb)
	}
	if unary, stream := callBoth(t, context.Background(), c); unary != nil || stream != nil {
		t.Fatalf("calls with the admin token failed: unary %v, stream %v", unary, stream)
	}
}

func TestTCPRefusesCallsWithoutTheAdminToken(t *testing.T) {
	f := writeTLSFiles(t)
	addr := serveStub(t, f)
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	writeFile(t, wrong, []byte(testAdminToken+"x"), 0o600)
	prefix := filepath.Join(t.TempDir(), "prefix.token")
	writeFile(t, prefix, []byte(testAdminToken[:len(testAdminToken)-1]), 0o600)

	// A client with TLS but no per-call credentials sends no token.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(f.cert)
	pool.AppendCertsFromPEM(pem)
	noToken, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer noToken.Close()

	tests := []struct {
		name   string
		client adminpb.AdminClient
		ctx    context.Context
	}{
		{"wrong token", dialForTest(t, addr, DialOptions{TokenFile: wrong, CAFile: f.cert}), context.Background()},
		{"token prefix", dialForTest(t, addr, DialOptions{TokenFile: prefix, CAFile: f.cert}), context.Background()},
		{"no token", adminpb.NewAdminClient(noToken), context.Background()},
		{"not a bearer", adminpb.NewAdminClient(noToken),
			metadata.AppendToOutgoingContext(context.Background(), "authorization", "Basic "+testAdminToken)},
		{"two tokens", adminpb.NewAdminClient(noToken),
			metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer x", "authorization", "Bearer "+testAdminToken)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unary, stream := callBoth(t, tt.ctx, tt.client)
			for kind, err := range map[string]error{"unary": unary, "stream": stream} {
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s call: %v, want Unauthenticated", kind, err)
				}
			}
		})
	}
}

func TestTCPRefusesClientsThatDoNotSpeakTLS(t *testing.T) {
	f := writeTLSFiles(t)
	addr := serveStub(t, f)
	plain, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = adminpb.NewAdminClient(plain).GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: "web"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext call: %v, want Unavailable (handshake refused)", err)
	}
}

func TestDialRefusesAGatewayCertificateItsCADidNotSign(t *testing.T) {
	f := writeTLSFiles(t)
	addr := serveStub(t, f)
	other := writeTLSFiles(t) // another self-signed CA
	c := dialForTest(t, addr, DialOptions{TokenFile: f.token, CAFile: other.cert})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: "web"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("call to a gateway with an unknown certificate: %v, want a certificate error", err)
	}
}

func TestUnixSocketCallsNeedNoToken(t *testing.T) {
	f := writeTLSFiles(t)
	opts, err := ServerOptions(TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: f.token})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	adminpb.RegisterAdminServer(srv, stubAdminServer{})
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv, l)
	c := dialForTest(t, path, DialOptions{})
	if unary, stream := callBoth(t, context.Background(), c); unary != nil || stream != nil {
		t.Fatalf("calls through the unix socket failed: unary %v, stream %v", unary, stream)
	}
}

func TestServerOptionsRefusesWeakConfiguration(t *testing.T) {
	f := writeTLSFiles(t)
	dir := t.TempDir()
	public := filepath.Join(dir, "public.token")
	writeFile(t, public, []byte(testAdminToken), 0o644)
	short := filepath.Join(dir, "short.token")
	writeFile(t, short, []byte("hunter2"), 0o600)
	empty := filepath.Join(dir, "empty.token")
	writeFile(t, empty, []byte(" \n"), 0o600)
	tests := []struct {
		name string
		cfg  TCPConfig
		want string
	}{
		{"no certificate", TCPConfig{KeyFile: f.key, TokenFile: f.token}, "certificate"},
		{"no token file", TCPConfig{CertFile: f.cert, KeyFile: f.key}, "token"},
		{"missing certificate file", TCPConfig{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: f.key, TokenFile: f.token}, "nope.pem"},
		{"token readable by others", TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: public}, "chmod 600"},
		{"short token", TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: short}, "at least 16"},
		{"empty token", TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: empty}, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ServerOptions(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ServerOptions(%+v) = %v, want an error mentioning %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestTCPServesHealthToProbesWithoutTheAdminToken(t *testing.T) {
	f := writeTLSFiles(t)
	srv, l, err := ListenTCP("127.0.0.1:0", TCPConfig{CertFile: f.cert, KeyFile: f.key, TokenFile: f.token})
	if err != nil {
		t.Fatal(err)
	}
	adminpb.RegisterAdminServer(srv, stubAdminServer{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	serve(t, srv, l)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(f.cert)
	pool.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient("passthrough:///"+l.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without a token: %v, %v; want SERVING", resp, err)
	}
	// The exemption is the health service's alone.
	if _, err := adminpb.NewAdminClient(conn).GetSandbox(ctx, &adminpb.GetSandboxRequest{Sandbox: "web"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("operator call without a token: %v, want Unauthenticated", err)
	}
}
