package source

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authServer is a gRPC server on a unix socket that records the
// authorization header of every call it gets.
type authServer struct {
	mu   sync.Mutex
	seen []string
}

func startAuthServer(t *testing.T) (addr string, srv *authServer) {
	t.Helper()
	srv = &authServer{}
	sock := filepath.Join(t.TempDir(), "gw.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		srv.mu.Lock()
		srv.seen = append(srv.seen, md.Get("authorization")...)
		srv.mu.Unlock()
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	return "unix://" + sock, srv
}

func (a *authServer) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		return ""
	}
	return a.seen[len(a.seen)-1]
}

func TestPerRPCCredentialsSendTheCurrentTokenOnEveryCall(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Dir = "" })
	if s.PerRPCCredentials().RequireTransportSecurity() {
		t.Error("credentials require transport security; sessions run over unix sockets and vsock")
	}
	addr, srv := startAuthServer(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(s.PerRPCCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx := context.Background()

	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without a token: %v, want Unauthenticated", err)
	}
	for gen := uint64(1); gen <= 2; gen++ {
		tok := f.mint(gen)
		if err := s.Offer(tok.Raw(), f.jwks(), originPush); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if got, want := srv.last(), "Bearer "+tok.Raw(); got != want {
			t.Fatalf("gen %d: server saw authorization %.30q..., want the current token", gen, got)
		}
	}
}
