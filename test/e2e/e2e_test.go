// Package e2e runs sandkey end to end on this machine: the real gateway
// core on a real SQLite store, the process driver, and the real
// supervisor binary as each sandbox's PID 1 stand-in (a subreaper).
package e2e

import (
	"bytes"
	"cmp"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

func TestMain(m *testing.M) { binaries.RunTests(m) }

type harness struct {
	t     testing.TB
	dir   string
	proc  *process.Driver
	gw    *gateway.Gateway
	stop  context.CancelFunc
	done  chan struct{}
	lifet time.Duration
	grace time.Duration // the gateway's StopGrace; 2 s when 0
}

func newHarness(t *testing.T, lifetime time.Duration) *harness {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, lifet: lifetime}
	h.start()
	t.Cleanup(func() {
		if h.gw != nil {
			ctx := context.Background()
			if all, err := h.gw.List(ctx); err == nil {
				for _, sb := range all {
					h.gw.Delete(ctx, sb.ID)
				}
			}
		}
		h.shutdown()
		os.RemoveAll(dir)
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	proc, err := process.New(process.Config{SupervisorPath: binaries.Supervisor, StateRoot: filepath.Join(h.dir, "process")})
	if err != nil {
		h.t.Fatal(err)
	}
	h.proc = proc
	gw, err := gateway.Open(context.Background(), gateway.Config{
		StateDir: filepath.Join(h.dir, "state"), Lifetime: h.lifet, StopGrace: cmp.Or(h.grace, 2*time.Second),
		SweepInterval: 100 * time.Millisecond, HeartbeatInterval: time.Second,
		Drivers: map[string]driver.Driver{process.Name: proc}, DefaultDriver: process.Name,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.gw = gw
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() { defer close(h.done); gw.Serve(ctx) }()
}

func (h *harness) shutdown() {
	if h.gw == nil {
		return
	}
	h.stop()
	<-h.done
	h.gw.Close()
	h.proc.Close()
	h.gw = nil
}

// eventually polls cond every 20 ms until it holds or the bound passes.
func (h *harness) eventually(bound time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("not within %s: %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) status(sb gateway.Sandbox) supervisor.Status {
	st, _ := supervisor.ReadStatus(filepath.Join(h.dir, "state", "sandboxes", sb.ID, "driver", process.StatusFileName))
	return st
}

func (h *harness) exec(id string, argv ...string) (string, session.ExecResult) {
	h.t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.gw.Exec(ctx, id, session.ExecRequest{Argv: argv, Stdout: &out, Stderr: &out})
	if err != nil {
		h.t.Fatalf("exec %v in %s: %v", argv, id, err)
	}
	return out.String(), res
}

func TestLocalSandboxRegistersRotatesAndRecoversAcrossAGatewayRestart(t *testing.T) {
	h := newHarness(t, 20*time.Second)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "e2e", Start: true,
		Spec: gateway.Spec{Command: []string{"sleep", "600"}, Env: map[string]string{"SANDKEY_SANDBOX_ID": "forged"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "supervisor registered", func() bool { return h.gw.Sessions().Connected(sb.ID) })

	out, res := h.exec(sb.ID, "sh", "-c", "echo id=$SANDKEY_SANDBOX_ID")
	if res.ExitCode != 0 || strings.TrimSpace(out) != "id="+sb.ID {
		t.Fatalf("exec: %q, %+v; want id=%s (the user's SANDKEY_ variable stripped)", out, res, sb.ID)
	}
	if _, res := h.exec(sb.ID, "sh", "-c", "exit 42"); res.ExitCode != 42 {
		t.Fatalf("exec exit code = %d, want 42", res.ExitCode)
	}

	gen, err := h.gw.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(5*time.Second, "status file shows the rotated generation", func() bool { return h.status(sb).Gen == gen })
	h.eventually(5*time.Second, "gateway records the rotated generation as delivered", func() bool {
		got, _ := h.gw.Get(ctx, sb.ID)
		return got.DeliveredGen == gen
	})

	// The gateway goes away (its sessions with it) and comes back; a
	// generation minted by the new gateway reaches the supervisor, which
	// registers again by itself.
	h.shutdown()
	h.eventually(5*time.Second, "supervisor notices the session is gone", func() bool { return !h.status(sb).Connected })
	h.start()
	gen2, err := h.gw.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(15*time.Second, "supervisor re-registered with the new gateway", func() bool { return h.gw.Sessions().Connected(sb.ID) })
	h.eventually(5*time.Second, "new generation acknowledged after reconnect", func() bool {
		got, _ := h.gw.Get(ctx, sb.ID)
		return got.DeliveredGen == gen2 && h.status(sb).Gen == gen2
	})
	if out, res := h.exec(sb.ID, "true"); res.ExitCode != 0 {
		t.Fatalf("exec after restart: %q %+v", out, res)
	}
}

func TestResumeAfterExpiryRegistersOnTheFirstTry(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "sleeper", Start: true,
		Spec: gateway.Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "registered", func() bool { return h.gw.Sessions().Connected(sb.ID) })
	if _, err := h.gw.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10*time.Second + 30*time.Second/30) // past the token's lifetime (leeway is not waited out: the supervisor checks exp strictly)
	started, err := h.gw.Start(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "registered after resume", func() bool { return h.gw.Sessions().Connected(sb.ID) })
	st := h.status(sb)
	if st.Gen != started.LatestGen || st.TokenExpired {
		t.Fatalf("status after resume: %+v, want gen %d unexpired", st, started.LatestGen)
	}
	if _, res := h.exec(sb.ID, "true"); res.ExitCode != 0 {
		t.Fatalf("exec after resume: %+v", res)
	}
}

// A mistyped command: the supervisor cannot start it and ends before any
// session, and still tells the gateway, which marks the sandbox stopped
// rather than running with no process.
func TestWorkloadThatCannotStartMarksTheSandboxStopped(t *testing.T) {
	h := newHarness(t, time.Minute)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "typo", Start: true,
		Spec: gateway.Spec{Command: []string{"/no/such/command"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(15*time.Second, "the sandbox is marked stopped after its workload failed to start", func() bool {
		got, _ := h.gw.Get(ctx, sb.ID)
		return got.State == "stopped"
	})
}

func TestWorkloadExitMarksTheSandboxStopped(t *testing.T) {
	h := newHarness(t, time.Minute)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "brief", Start: true,
		Spec: gateway.Spec{Command: []string{"sh", "-c", "sleep 2; exit 3"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(15*time.Second, "the sandbox is marked stopped after its workload exits", func() bool {
		got, _ := h.gw.Get(ctx, sb.ID)
		return got.State == "stopped"
	})
	// Its supervisor ends right after reporting; then it starts again, on
	// a new token.
	h.eventually(10*time.Second, "the supervisor process ended", func() bool {
		st, err := h.proc.Status(ctx, sb.ID)
		return err == nil && st.State == driver.StateStopped
	})
	before, _ := h.gw.Get(ctx, sb.ID)
	again, err := h.gw.Start(ctx, sb.ID)
	if err != nil || again.LatestGen != before.LatestGen+1 {
		t.Fatalf("restart: %+v, %v; want gen %d", again, err, before.LatestGen+1)
	}
}
