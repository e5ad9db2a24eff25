package session

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangingAuthority holds every RecordDelivered of one sandbox, once
// armed, until released: a store that stopped answering (a network
// partition holds a connection attempt for minutes).
type hangingAuthority struct {
	TestAuthority
	sandboxID string
	armed     atomic.Bool
	entered   chan struct{} // closed when the first call is held
	enterOnce sync.Once
	release   chan struct{}
}

func (a *hangingAuthority) RecordDelivered(ctx context.Context, sandboxID string, gen uint64) error {
	if sandboxID == a.sandboxID && a.armed.Load() {
		a.enterOnce.Do(func() { close(a.entered) })
		<-a.release
	}
	return a.TestAuthority.RecordDelivered(ctx, sandboxID, gen)
}

// A session's call into the store runs on its pump; while it hangs, the
// server's one heartbeat ticker, pushes to that session and every other
// session go on. (They once waited on the session's lock, held across
// the call: one unanswered store call stopped every heartbeat.)
func TestAStoreCallThatHangsHoldsUpNoOtherSession(t *testing.T) {
	const hb = 100 * time.Millisecond
	var hang *hangingAuthority
	e := newEnv(t, envConfig{heartbeat: hb, wrap: func(a TestAuthority) TestAuthority {
		hang = &hangingAuthority{TestAuthority: a, sandboxID: "sb-slow", entered: make(chan struct{}), release: make(chan struct{})}
		return hang
	}})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hang.release) }) }
	t.Cleanup(release) // before the server closes: its pump must return

	open := func(id string) *rawSession {
		target, tok := e.sandbox(id)
		r := openRaw(t, dialRaw(t, target), tok.Raw())
		r.hello(id, tok.Gen())
		if m, err := r.next(5 * time.Second); err != nil || m.GetAccepted() == nil {
			t.Fatalf("%s: %v, %v; want Accepted", id, m, err)
		}
		t.Cleanup(startBeating(r, hb/2))
		return r
	}
	slow, fast := open("sb-slow"), open("sb-fast")

	hang.armed.Store(true)
	tok := e.mint("sb-slow")
	e.srv.Push("sb-slow")
	if m, err := slow.next(5 * time.Second); err != nil || m.GetTokenUpdate().GetGen() != tok.Gen() {
		t.Fatalf("push to sb-slow: %v, %v", m, err)
	}
	slow.ack(tok.Gen())
	select {
	case <-hang.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the acknowledgement never reached the store")
	}

	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		e.mint("sb-slow")
		e.srv.Push("sb-slow")
	}()
	select {
	case <-pushed:
	case <-time.After(5 * time.Second):
		t.Fatal("a push to the session whose store call hangs waited for it")
	}

	// The other session keeps its heartbeats and gets its pushes.
	beats := 0
	for deadline := time.After(10 * hb); beats < 3; {
		select {
		case m := <-fast.msgs:
			if m.GetHeartbeat() != nil {
				beats++
			}
		case <-deadline:
			t.Fatalf("sb-fast got %d heartbeats in %s while sb-slow's store call hung, want at least 3", beats, 10*hb)
		}
	}
	fastTok := e.mint("sb-fast")
	e.srv.Push("sb-fast")
	if m, err := fast.next(5 * time.Second); err != nil || m.GetTokenUpdate().GetGen() != fastTok.Gen() {
		t.Fatalf("push to sb-fast while sb-slow's store call hung: %v, %v", m, err)
	}

	release()
	eventually(t, "sb-slow's acknowledgement recorded once the store answers", func() bool {
		return hang.Delivered("sb-slow") == tok.Gen()
	})
}
