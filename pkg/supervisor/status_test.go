package supervisor

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/session"
)

// TestStatusFileFollowsTheSessionAtOnce runs a real session server and
// client, with a status refresh far longer than the test: the status file
// shows connected, then disconnected, only because each change of the
// session's state writes it.
func TestStatusFileFollowsTheSessionAtOnce(t *testing.T) {
	const id = "sb-status"
	dir, err := os.MkdirTemp("", "sk") // short: a unix socket lives in it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeySet(key)
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Keys: keys, Issuer: "https://gateway.test", Audience: "sandkey",
		TrustDomain: "test.sandkey", Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	authority := session.NewMemAuthority(issuer, keys)
	tok, err := authority.Mint(id)
	if err != nil {
		t.Fatal(err)
	}
	srv := session.NewServer(session.ServerConfig{Authority: authority})
	g := grpc.NewServer(session.ServerOptions(nil)...)
	srv.Register(g)
	listeners := session.NewListeners(g, zap.NewNop())
	sock, err := listeners.AddSandbox(filepath.Join(dir, "gw"), id)
	if err != nil {
		t.Fatal(err)
	}
	stopServer := sync.OnceFunc(func() {
		srv.Close()
		listeners.Close()
		g.Stop()
	})
	t.Cleanup(stopServer)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := source.New(ctx, source.Config{SandboxID: id, Issuer: "https://gateway.test", Audience: "sandkey", TrustDomain: "test.sandkey"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Offer(tok.Raw(), authority.JWKS(), "test"); err != nil {
		t.Fatal(err)
	}
	client, err := session.NewClient(session.ClientConfig{Target: "unix://" + sock, SandboxID: id, InstanceID: "i-1", Source: src,
		Backoff: session.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	statusFile := filepath.Join(dir, "status.json")
	cfg := Config{SandboxID: id, StatusFile: statusFile}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { client.Run(ctx) })
	watcher := dirwatch.New(nil)
	defer watcher.Close()
	wg.Go(func() { keepStatus(ctx, cfg, src, client, watcher, 1, time.Hour, zap.NewNop()) })

	waitStatus := func(what string, cond func(Status) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := ReadStatus(statusFile)
			if err == nil && cond(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status file: %s: not within 10s; last %+v (%v)", what, st, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitStatus("connected", func(st Status) bool { return st.Connected && st.SessionID != "" && st.Gen == tok.Gen() })
	stopServer()
	waitStatus("disconnected", func(st Status) bool { return !st.Connected && st.LastError != "" })
}
