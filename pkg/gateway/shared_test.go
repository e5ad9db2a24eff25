package gateway

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/session"
)

func TestSharedListenerAcceptsOnlyValidBearers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("remote")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.g.ServeShared("tcp", l); err != nil {
		t.Fatal(err)
	}
	connect := func(now func() time.Time) (*session.Client, *source.Source, context.CancelFunc, chan struct{}) {
		src, err := source.New(ctx, source.Config{SandboxID: sb.ID, Dir: e.g.tokenDir(sb.ID), Now: now, PollInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c, err := session.NewClient(session.ClientConfig{Target: "tcp://" + l.Addr().String(), SandboxID: sb.ID,
			InstanceID: "remote-1", Source: src, Backoff: session.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); c.Run(runCtx) }()
		return c, src, cancel, done
	}
	stop := func(c *session.Client, src *source.Source, cancel context.CancelFunc, done chan struct{}) {
		cancel()
		<-done
		c.Close()
		src.Close()
	}

	// A valid token registers over TCP.
	c, src, cancel, done := connect(e.clock.Now)
	deadline := time.Now().Add(10 * time.Second)
	for !e.g.Sessions().Connected(sb.ID) {
		if time.Now().After(deadline) {
			_, _, lastErr := c.State()
			t.Fatalf("no session over the shared listener: %v", lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop(c, src, cancel, done)

	// The same token once expired is refused there, where an attested
	// socket would take it. The supervisor's clock stays behind, so it
	// still presents the token the gateway now finds expired.
	supervisorNow := e.clock.Now()
	e.clock.Add(lifetime + time.Minute)
	e.g.Sessions().Disconnect(sb.ID)
	c, src, cancel, done = connect(func() time.Time { return supervisorNow })
	time.Sleep(500 * time.Millisecond)
	if e.g.Sessions().Connected(sb.ID) {
		t.Fatal("an expired bearer registered over the shared listener")
	}
	_, _, lastErr := c.State()
	stop(c, src, cancel, done)
	if lastErr == nil || !strings.Contains(lastErr.Error(), "expired") {
		t.Fatalf("last session error = %v, want a refusal of the expired token", lastErr)
	}
}

func TestPlaintextSharedListenerOffLoopbackIsRefused(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.g.ServeShared("tcp", l); err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the refused listener is still open: %v", err)
	}
}
