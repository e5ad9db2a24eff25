package session

import (
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/source"
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
