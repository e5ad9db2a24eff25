package session

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// tickClock is a fake Clock: its time and its tickers move only when a
// test calls Advance. Like a time.Ticker, a ticker holds one tick and
// drops the ticks its reader missed.
type tickClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*tickTicker
}

type tickTicker struct {
	clock   *tickClock
	c       chan time.Time
	every   time.Duration
	next    time.Time
	stopped bool
}

func newTickClock() *tickClock {
	return &tickClock{now: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *tickClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &tickTicker{clock: c, c: make(chan time.Time, 1), every: d, next: c.now.Add(d)}
	c.tickers = append(c.tickers, t)
	return t
}

// running counts the tickers not stopped.
func (c *tickClock) running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.tickers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// Advance moves the time by d and ticks every ticker whose period ended.
func (c *tickClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.tickers {
		for !t.stopped && !t.next.After(c.now) {
			select {
			case t.c <- t.next:
			default:
			}
			t.next = t.next.Add(t.every)
		}
	}
}

func (t *tickTicker) C() <-chan time.Time { return t.c }

func (t *tickTicker) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.stopped = true
}

// nextAny returns r's next message, heartbeats included.
func nextAny(t *testing.T, r *rawSession) *sessionpb.GatewayMessage {
	t.Helper()
	select {
	case m := <-r.msgs:
		return m
	case err := <-r.err:
		t.Fatalf("session ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no message from the gateway in 5s")
	}
	return nil
}

// kind names m's message and generation, never its token.
func kind(m *sessionpb.GatewayMessage) string {
	return fmt.Sprintf("%T (gen %d)", m.GetMsg(), m.GetTokenUpdate().GetGen())
}

func TestUnacknowledgedPushIsResentAfterTwoIntervalsOfTheServersClock(t *testing.T) {
	// An hour: the real clock never ticks during this test, only the
	// injected one does.
	const hb = time.Hour
	clock := newTickClock()
	e := newEnv(t, envConfig{heartbeat: hb, clock: clock})
	_, tok := e.sandbox("sb-tick")
	r := openRaw(t, dialRaw(t, e.tcpTarget()), tok.Raw())
	r.hello("sb-tick", tok.Gen())
	if acc := r.accepted(); acc.Token != nil {
		t.Fatalf("accepted carries a token although the supervisor holds the latest")
	}
	eventually(t, "the session's heartbeat ticker", func() bool { return clock.running() == 1 })
	gen2 := e.mint("sb-tick")
	e.srv.Push("sb-tick")
	if m := nextAny(t, r); m.GetTokenUpdate().GetGen() != gen2.Gen() {
		t.Fatalf("push: %s, want a token update of gen %d", kind(m), gen2.Gen())
	}

	// One interval: a heartbeat, and no resend yet.
	clock.Advance(hb)
	if m := nextAny(t, r); m.GetHeartbeat() == nil {
		t.Fatalf("after one interval: %s, want only a heartbeat", kind(m))
	}
	if n := metricValue(e.srv.metrics.resends); n != 0 {
		t.Fatalf("resends after one interval = %v, want 0", n)
	}
	// Two intervals: the same generation again, then the heartbeat.
	clock.Advance(hb)
	if m := nextAny(t, r); m.GetTokenUpdate().GetGen() != gen2.Gen() || m.GetTokenUpdate().GetToken() != gen2.Raw() {
		t.Fatalf("after two intervals: %s, want gen %d resent", kind(m), gen2.Gen())
	}
	if m := nextAny(t, r); m.GetHeartbeat() == nil {
		t.Fatalf("after the resend: %s, want the heartbeat", kind(m))
	}
	if n := metricValue(e.srv.metrics.resends); n != 1 {
		t.Fatalf("resends = %v, want 1", n)
	}
}
