package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/dirwatch/dirwatchtest"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/supervisor"
)

func inotifyInstances(t *testing.T, pid int) int {
	t.Helper()
	n, err := dirwatchtest.InotifyInstances(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inotify instances are a per-user kernel limit shared by every
// supervisor of the host user: one supervisor holds one, connected or
// reconnecting, and its status file says how it watches.
func TestSupervisorHoldsOneInotifyInstanceConnectedOrNot(t *testing.T) {
	h := newHarness(t, time.Minute)
	sb, err := h.gw.Create(context.Background(), gateway.CreateRequest{Name: "one", Start: true,
		Spec: gateway.Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "supervisor registered", func() bool { return h.status(sb).Connected })
	if st := h.status(sb); st.Watch != supervisor.WatchInotify || st.Degraded != "" {
		t.Fatalf("status says watch %q, degraded %q; want %q and none", st.Watch, st.Degraded, supervisor.WatchInotify)
	}
	pid := supervisorPID(t, h, sb.ID)
	if n := inotifyInstances(t, pid); n != 1 {
		t.Fatalf("connected supervisor holds %d inotify instances, want 1", n)
	}
	h.shutdown() // the supervisor reconnects, in backoff, watching its socket
	h.eventually(5*time.Second, "supervisor notices the session is gone", func() bool { return !h.status(sb).Connected })
	for range 20 {
		if n := inotifyInstances(t, pid); n != 1 {
			t.Fatalf("reconnecting supervisor holds %d inotify instances, want 1", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.start()
}
