package supervisor

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessiontest"
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
	authority := sessiontest.NewMemAuthority(issuer, keys)
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

func TestStatusShowsTheTokenAsItStandsAtItsTime(t *testing.T) {
	issued := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	tok := mintToken(t, "sb", 7, issued)
	for _, tc := range []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"fresh", issued.Add(time.Minute), false},
		{"at expiry", tok.ExpiresAt(), true},
		{"past expiry", tok.ExpiresAt().Add(time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st Status
			st.setToken(tok, tc.now)
			if st.Gen != 7 || st.JTI != tok.JTI() || !st.ExpiresAt.Equal(tok.ExpiresAt()) || st.TokenExpired != tc.expired {
				t.Errorf("status = gen %d jti %s exp %v expired %v; want gen 7, jti %s, exp %v, expired %v",
					st.Gen, st.JTI, st.ExpiresAt, st.TokenExpired, tok.JTI(), tok.ExpiresAt(), tc.expired)
			}
			if st.UpdatedAt.Location() != time.UTC || st.ExpiresAt.Location() != time.UTC {
				t.Error("times are not in UTC")
			}
		})
	}
	var st Status
	st.setToken(tok, issued)
	st.setToken(nil, issued)
	if st.Gen != 0 || st.JTI != "" || !st.ExpiresAt.IsZero() || st.TokenExpired {
		t.Errorf("without a token: %+v, want no token fields", st)
	}
}

func TestStatusShowsTheSessionAndHowChangesAreNoticed(t *testing.T) {
	var st Status
	st.setSession(false, "", errors.New("dial unix /run/sandkey/gw.sock: connection refused"))
	if st.Connected || st.LastError != "dial unix /run/sandkey/gw.sock: connection refused" {
		t.Errorf("disconnected: %+v", st)
	}
	st.setSession(true, "s-1", nil)
	if !st.Connected || st.SessionID != "s-1" || st.LastError != "" {
		t.Errorf("connected: %+v, want the last error cleared", st)
	}
	st.setWatch("")
	if st.Watch != WatchInotify || st.Degraded != "" {
		t.Errorf("with inotify: watch %q degraded %q", st.Watch, st.Degraded)
	}
	st.setWatch("no inotify instance left")
	if st.Watch != WatchPoll || st.Degraded != "no inotify instance left" {
		t.Errorf("degraded: watch %q degraded %q", st.Watch, st.Degraded)
	}
}

func TestStatusFileIsReplacedWholeAndReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	want := Status{SandboxID: "sb", Gen: 2, JTI: "j", Connected: true, UpdatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := writeStatus(path, Status{SandboxID: "old"}); err != nil {
		t.Fatal(err)
	}
	if err := writeStatus(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("read back %+v, want %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644 (it holds nothing secret)", fi.Mode().Perm())
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadStatus of a torn file = %v, want an error naming %s", err, path)
	}
}
