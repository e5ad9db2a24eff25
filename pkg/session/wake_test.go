package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/guest"
	"google.golang.org/grpc/connectivity"
)

// With a backoff of an hour, only the socket's re-creation can bring the
// client back: a restarted gateway is reached at once.
func TestClientReconnectsAsSoonAsTheGatewaySocketReappears(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-wake")
	src := e.newSource("sb-wake", tok)
	rc := e.startClient(ClientConfig{Target: target, SandboxID: "sb-wake", Source: src,
		Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
	eventually(t, "first session", func() bool { c, _, _ := rc.State(); return c })

	if err := e.listeners.RemoveSandbox("sb-wake"); err != nil { // the gateway goes away
		t.Fatal(err)
	}
	eventually(t, "session gone", func() bool { c, _, _ := rc.State(); return !c })
	time.Sleep(100 * time.Millisecond) // the client is now in its hour-long backoff
	if _, err := e.listeners.AddSandbox(e.dir+"/sb-wake", "sb-wake"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session back long before the backoff ends", func() bool { c, _, _ := rc.State(); return c })
	if got := metricValue(e.srv.metrics.accepted); got != 2 {
		t.Fatalf("sessions accepted = %v, want 2 (one per registration)", got)
	}
}

// With a backoff of an hour, only the token the source takes from its
// directory can bring back a supervisor the gateway refused: it redials as
// soon as it holds it.
func TestClientReconnectsAsSoonAsItsSourceTakesANewToken(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.sandbox("sb-wake")
	restored := e.mint("sb-wake")
	forgotten, err := e.issuer.Mint("sb-wake", 5) // the store no longer knows it
	if err != nil {
		t.Fatal(err)
	}
	src := e.newSource("sb-wake", forgotten)
	rc := e.startClient(ClientConfig{Target: e.tcpTarget(), SandboxID: "sb-wake", Source: src,
		Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
	eventually(t, "the forgotten token refused", func() bool {
		_, _, err := rc.State()
		return err != nil
	})
	time.Sleep(100 * time.Millisecond) // the client is now in its hour-long backoff
	if err := src.Offer(restored.Raw(), e.jwks(), source.OriginDir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session back long before the backoff ends", func() bool { c, _, _ := rc.State(); return c })
}

// Without inotify (the host user's instances spent), the socket is looked
// at every SocketPollInterval during a backoff: a restarted gateway is
// still reached within it, not at the backoff's end.
func TestClientWithoutInotifyReconnectsWithinItsSocketPollInterval(t *testing.T) {
	e := newEnv(t, envConfig{})
	target, tok := e.sandbox("sb-poll")
	src := e.newSource("sb-poll", tok)
	rc := e.startClient(ClientConfig{Target: target, SandboxID: "sb-poll", Source: src,
		Backoff: Backoff{Min: time.Hour, Max: time.Hour},
		Watcher: dirwatch.Unavailable(errors.New("too many open files"))})
	eventually(t, "first session", func() bool { c, _, _ := rc.State(); return c })

	if err := e.listeners.RemoveSandbox("sb-poll"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session gone", func() bool { c, _, _ := rc.State(); return !c })
	time.Sleep(100 * time.Millisecond)
	if _, err := e.listeners.AddSandbox(e.dir+"/sb-poll", "sb-poll"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session back long before the backoff ends", func() bool { c, _, _ := rc.State(); return c })
}

// newWakeClient is a client on a unix target in dir, not running, for
// the tests of its backoff wait.
func newWakeClient(t *testing.T, e *env, dir string, w *dirwatch.Watcher) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Target: "unix://" + filepath.Join(dir, guest.SocketName), SandboxID: "sb-x",
		Source: e.newSource("sb-x", nil), Watcher: w, SocketPollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// watcherModes are the two ways a client learns of its socket: inotify,
// and polling where the host user has no inotify instance left.
var watcherModes = []struct {
	name    string
	watcher func() *dirwatch.Watcher
}{
	{"inotify", func() *dirwatch.Watcher { return dirwatch.New(nil) }},
	{"polling", func() *dirwatch.Watcher { return dirwatch.Unavailable(errors.New("no inotify")) }},
}

// newBackoffWait is a client and its socket watch in a new directory,
// through the watcher made by newWatcher, for the tests of its backoff.
func newBackoffWait(t *testing.T, newWatcher func() *dirwatch.Watcher) (*Client, gatewaySocket, string) {
	t.Helper()
	e := newEnv(t, envConfig{})
	w := newWatcher()
	t.Cleanup(func() { w.Close() })
	dir := t.TempDir()
	c := newWakeClient(t, e, dir, w)
	sock := c.watchSocket()
	t.Cleanup(sock.close)
	return c, sock, dir
}

// A socket made between the failed attempt and the start of the backoff
// (no event to see any more) still ends the backoff at once.
func TestBackoffEndsForASocketMadeBeforeItBegan(t *testing.T) {
	for _, tc := range watcherModes {
		t.Run(tc.name, func(t *testing.T) {
			c, sock, dir := newBackoffWait(t, tc.watcher)
			before := sock.identity() // the attempt found no socket
			l, err := ListenSandboxSocket(dir, "sb-x")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			done := make(chan bool, 1)
			go func() { done <- c.sleepOrWake(context.Background(), time.Hour, sock, before, nil) }()
			select {
			case woken := <-done:
				if !woken {
					t.Fatal("the backoff ended without saying it was woken")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a socket made before the backoff did not end it")
			}
		})
	}
}

// The socket of the failed attempt, still there, never cuts a backoff
// short: a gateway that refused the session is not asked again at once,
// however often the socket is looked at or its directory changes.
func TestTheSameSocketNeverEndsABackoff(t *testing.T) {
	for _, tc := range watcherModes {
		t.Run(tc.name, func(t *testing.T) {
			c, sock, dir := newBackoffWait(t, tc.watcher)
			l, err := ListenSandboxSocket(dir, "sb-x")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			before := sock.identity()
			if err := os.WriteFile(filepath.Join(dir, "other"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if c.sleepOrWake(context.Background(), 300*time.Millisecond, sock, before, nil) {
				t.Fatal("woken by the socket the attempt already used")
			}
			if waited := time.Since(start); waited < 300*time.Millisecond {
				t.Fatalf("backoff of 300ms ended after %s", waited)
			}
		})
	}
}

// An attempt can fail on the error of the connection's last dial, made
// before a new socket appeared: the backoff compares with the socket that
// dial found, not with the one there once the attempt failed, and each
// attempt dials afresh rather than failing on an old dial's error.
func TestAttemptsDialAfreshAndBackoffsCompareWithTheSocketTheDialFound(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := dirwatch.Unavailable(errors.New("no inotify"))
	dir := t.TempDir()
	c := newWakeClient(t, e, dir, w)
	sock := c.watchSocket()
	defer sock.close()
	ctx := context.Background()

	c.dialNow(ctx, 2*time.Second)                                  // no socket yet: the dial fails
	if _, err := e.listeners.AddSandbox(dir, "sb-x"); err != nil { // a gateway serves it
		t.Fatal(err)
	}
	before := c.lastDialed()
	if before.exists {
		t.Fatal("the dial is recorded as having found the socket made after it")
	}
	if !c.sleepOrWake(ctx, time.Hour, sock, before, nil) {
		t.Fatal("not woken by the socket made after the failed dial")
	}
	c.dialNow(ctx, 2*time.Second)
	if st := c.conn.GetState(); st != connectivity.Ready {
		t.Fatalf("connection %s after a fresh dial to a listening socket, want READY", st)
	}
	if !c.lastDialed().exists {
		t.Fatal("the fresh dial is not recorded")
	}
}
