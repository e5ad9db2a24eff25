package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandkey/sandkey/pkg/auth"
)

// The host's clock is set back by more than the verifiers' leeway (an NTP
// correction, a VM restored from a snapshot): every token then claims to
// be issued in the future, and verifiers refuse it as not yet valid. Its
// rotation point is in the future too, so a sweep that waited for it would
// leave every running sandbox on an unusable token for as long as the
// clock went back. The next sweep replaces it, and so does a restart's
// reconcile.
func TestAClockSetBackRotatesTokensIssuedInTheFuture(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("timetraveller")
	e.clock.Add(-10 * lifetime)
	if _, err := e.dirToken(sb.ID); err == nil {
		t.Fatal("a token issued ten lifetimes ahead of the clock verifies; the test proves nothing")
	}
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dirToken(sb.ID); err != nil {
		t.Fatalf("after a sweep, the running sandbox's token: %v", err)
	}

	e.clock.Add(-10 * lifetime)
	e.restart(0)
	if _, err := e.dirToken(sb.ID); err != nil {
		t.Fatalf("after a restart, the running sandbox's token: %v", err)
	}
}

// A sweep while the clock ran a day ahead pruned then; once the clock is
// set right, sweeps go on pruning every half lifetime, rather than waiting
// a day for the clock to pass that prune (the store growing by a row per
// sandbox per rotation meanwhile).
func TestPruningGoesOnAfterTheClockWasSetBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("pruned")
	e.clock.Add(24 * time.Hour)
	if _, err := e.g.Sweep(ctx); err != nil { // prunes (nothing yet), a day ahead
		t.Fatal(err)
	}
	e.clock.Add(-24 * time.Hour)
	for range 4 {
		if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	before := testutil.ToFloat64(e.g.metrics.pruned)
	e.clock.Add(lifetime + auth.Leeway + time.Second) // every generation but the newest two expired
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.g.metrics.pruned) - before; got == 0 {
		t.Fatal("no generation record pruned since the clock was set back")
	}
}
