package containere2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/container"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

// Settings of every harness gateway.
const (
	heartbeat     = time.Second            // sessions notice a dead peer in 3 s
	sweepInterval = 100 * time.Millisecond // rotations within 0.1 s of their point
	stopGrace     = 2 * time.Second        // the supervisor forwards SIGTERM; busybox sleep dies at once
	// registerBound bounds a fresh sandbox's start to registration.
	registerBound = 30 * time.Second
	// reconnectBound bounds a supervisor's return to a gateway that was
	// away: its backoff grows to 30 s, with full jitter.
	reconnectBound = 45 * time.Second
	// callTimeout bounds one gateway or engine call.
	callTimeout = time.Minute
)

// harness is one gateway with the engine's driver, in a state directory of
// its own, short enough for the sandboxes' unix sockets.
type harness struct {
	t        testing.TB
	e        *engine
	dir      string
	lifetime time.Duration
	grace    time.Duration // the gateway's StopGrace
	drv      *container.Driver
	engine   *client.Client

	// The open gateway; nil while it is down.
	gw     *gateway.Gateway
	reg    *prometheus.Registry
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan struct{}
}

// newHarness opens a gateway on engine e whose tokens live lifetime; it
// deletes every sandbox and closes when t ends.
func newHarness(t testing.TB, e *engine, lifetime time.Duration) *harness {
	t.Helper()
	return newHarnessGrace(t, e, lifetime, stopGrace)
}

// newHarnessGrace is newHarness with a gateway whose StopGrace is grace.
func newHarnessGrace(t testing.TB, e *engine, lifetime, grace time.Duration) *harness {
	t.Helper()
	c := e.client(t)
	drv, err := e.newDrv(container.Config{Host: "unix://" + e.socket(t), Supervisor: supervisorBin})
	if err != nil {
		t.Fatal(err)
	}
	// Removed, its tmpfs roots unmounted, after the cleanup below.
	dir := binaries.TempDir(t, "sk")
	h := &harness{t: t, e: e, dir: dir, lifetime: lifetime, grace: grace, drv: drv, engine: c}
	binaries.MemoryRoots(t, filepath.Join(dir, "state"))
	t.Cleanup(func() {
		if t.Failed() {
			h.dumpLogs()
		}
		if h.gw == nil {
			h.open()
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if all, err := h.gw.List(ctx); err == nil {
			for _, sb := range all {
				if err := h.gw.Delete(ctx, sb.ID); err != nil {
					t.Errorf("cleanup: delete sandbox %s: %v", sb.ID, err)
				}
			}
		}
		h.close()
		drv.Close()
	})
	h.open()
	return h
}

// open opens the gateway on the harness's state directory and serves it.
func (h *harness) open() {
	h.t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	h.reg = prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	gw, err := gateway.Open(ctx, gateway.Config{
		StateDir:          filepath.Join(h.dir, "state"),
		Lifetime:          h.lifetime,
		SweepInterval:     sweepInterval,
		HeartbeatInterval: heartbeat,
		StopGrace:         h.grace,
		Drivers:           map[string]driver.Driver{h.e.name: h.drv},
		DefaultDriver:     h.e.name,
		Logger:            zap.New(core),
		Registerer:        h.reg,
	})
	if err != nil {
		h.t.Fatalf("open gateway: %v", err)
	}
	h.gw, h.logs = gw, logs
	serveCtx, stop := context.WithCancel(context.Background())
	h.cancel, h.done = stop, make(chan struct{})
	go func() {
		defer close(h.done)
		gw.Serve(serveCtx)
	}()
}

// close stops the gateway; its sandboxes keep running.
func (h *harness) close() {
	if h.gw == nil {
		return
	}
	h.cancel()
	<-h.done
	if err := h.gw.Close(); err != nil {
		h.t.Errorf("close gateway: %v", err)
	}
	h.gw = nil
}

// dumpLogs shows the gateway's logs, for a failed test.
func (h *harness) dumpLogs() {
	if h.logs == nil {
		return
	}
	var b strings.Builder
	for _, e := range h.logs.All() {
		fields, _ := json.Marshal(e.ContextMap())
		fmt.Fprintf(&b, "%s %s %s %s\n", e.Time.Format("15:04:05.000"), e.LoggerName, e.Message, fields)
	}
	h.t.Logf("gateway log (%s):\n%s", h.e.name, b.String())
}

// create creates and starts a sandbox running command in the test image,
// and waits until its supervisor registers.
func (h *harness) create(name string, command ...string) gateway.Sandbox {
	h.t.Helper()
	return h.createFrom(name, testImage, command...)
}

// createFrom is create with another image; no command runs the image's.
func (h *harness) createFrom(name, image string, command ...string) gateway.Sandbox {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: name, Driver: h.e.name, Start: true,
		Spec: gateway.Spec{Image: image, Command: command}})
	if err != nil {
		h.t.Fatalf("create sandbox %s: %v", name, err)
	}
	h.eventually(registerBound, "supervisor of "+name+" registered", func() bool { return h.gw.Sessions().Connected(sb.ID) })
	return sb
}

// get returns the sandbox as the gateway's store has it.
func (h *harness) get(id string) gateway.Sandbox {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	sb, err := h.gw.Get(ctx, id)
	if err != nil {
		h.t.Fatalf("get sandbox %s: %v", id, err)
	}
	return sb
}

// rotate mints the sandbox's next generation now.
func (h *harness) rotate(id string) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	gen, err := h.gw.Rotate(ctx, id)
	if err != nil {
		h.t.Fatalf("rotate sandbox %s: %v", id, err)
	}
	return gen
}

// exec runs argv in the sandbox through the gateway and its supervisor.
func (h *harness) exec(id string, argv ...string) (stdout, stderr string, res session.ExecResult) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	res, err := h.gw.Exec(ctx, id, session.ExecRequest{Argv: argv, Stdout: &out, Stderr: &errOut})
	if err != nil {
		h.t.Fatalf("exec %q in sandbox %s: %v", argv, id, err)
	}
	return out.String(), errOut.String(), res
}

// hostToken is the token in the sandbox's token directory on the host.
func (h *harness) hostToken(id string) string {
	h.t.Helper()
	raw, err := tokendir.ReadToken(h.tokenDir(id))
	if err != nil {
		h.t.Fatalf("read host token of %s: %v", id, err)
	}
	return string(raw)
}

func (h *harness) tokenDir(id string) string {
	return filepath.Join(h.dir, "state", "tokens", id)
}

// containerName is the sandbox's container.
func containerName(id string) string { return container.ContainerPrefix + id }

// status reads the supervisor's status file out of the sandbox's
// container through the engine's archive API: it needs neither the
// session nor anything in the image.
func (h *harness) status(id string) (supervisor.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	rc, _, err := h.engine.CopyFromContainer(ctx, containerName(id), guest.StatusFile)
	if err != nil {
		return supervisor.Status{}, fmt.Errorf("copy %s from %s: %w", guest.StatusFile, containerName(id), err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return supervisor.Status{}, fmt.Errorf("copy %s from %s: %w", guest.StatusFile, containerName(id), err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return supervisor.Status{}, err
	}
	var st supervisor.Status
	if err := json.Unmarshal(data, &st); err != nil {
		return supervisor.Status{}, fmt.Errorf("status file of %s: %w: %q", id, err, data)
	}
	return st, nil
}

// waitStatus polls the supervisor's status file until cond holds for it,
// and returns it; it fails t after bound. A missing or unreadable file
// counts as cond not holding: the supervisor writes it at start.
func (h *harness) waitStatus(id string, bound time.Duration, what string, cond func(supervisor.Status) bool) supervisor.Status {
	h.t.Helper()
	var st supervisor.Status
	h.eventually(bound, what, func() bool {
		var err error
		st, err = h.status(id)
		return err == nil && cond(st)
	})
	return st
}

// acceptedSessions returns the gateway's "session accepted" log entries
// for the sandbox's instance: one per registration. A session is
// registered (Connected) just before its acceptance is logged.
func (h *harness) acceptedSessions(sandboxID, instanceID string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range h.logs.FilterMessage("session accepted").All() {
		m := e.ContextMap()
		if m["sandbox"] == sandboxID && m["instance"] == instanceID {
			out = append(out, e)
		}
	}
	return out
}

// counter sums the samples of the counter name on the gateway's registry
// whose labels include labels.
func (h *harness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// eventually polls cond every 20 ms until it holds, or fails t after bound.
func (h *harness) eventually(bound time.Duration, what string, cond func() bool) time.Duration {
	h.t.Helper()
	return eventually(h.t, bound, what, cond)
}

func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("not within %s: %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// engineExec runs argv in a container through the engine's exec API, not
// through sandkey, and returns its output and exit code.
func engineExec(t testing.TB, c *client.Client, id string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ex, err := c.ContainerExecCreate(ctx, id, ctr.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("engine exec %q in %s: %v", argv, id, err)
	}
	att, err := c.ContainerExecAttach(ctx, ex.ID, ctr.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("engine exec %q in %s: attach: %v", argv, id, err)
	}
	var out, errOut bytes.Buffer
	_, err = stdcopy.StdCopy(&out, &errOut, att.Reader)
	att.Close()
	if err != nil {
		t.Fatalf("engine exec %q in %s: read output: %v", argv, id, err)
	}
	// The exit code can lag the end of the output (Podman).
	for {
		info, err := c.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			t.Fatalf("engine exec %q in %s: inspect: %v", argv, id, err)
		}
		if !info.Running {
			return out.String(), errOut.String(), info.ExitCode
		}
		time.Sleep(10 * time.Millisecond)
	}
}
