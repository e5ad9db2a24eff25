package gateway

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/guest"
)

// A supervisor reconnects the moment its socket is there, so no socket
// may appear, or fail to answer, after the gateway says it is ready.
func TestReadyOnlyOnceEveryRunningSandboxSocketAnswers(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		ids = append(ids, e.create(name).ID)
	}
	e.restart(2 * lifetime)
	if ok, _ := e.g.Ready(); ok {
		t.Fatal("ready before Serve")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.g.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for ok, _ := e.g.Ready(); !ok; ok, _ = e.g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(time.Millisecond)
	}
	for _, id := range ids {
		conn, err := net.Dial("unix", filepath.Join(e.g.socketDir(id), guest.SocketName))
		if err != nil {
			t.Fatalf("sandbox %s's socket does not answer once the gateway is ready: %v", id, err)
		}
		conn.Close()
	}
}
