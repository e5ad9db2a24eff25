package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/test/fullfs"
)

// serve runs e's gateway's Serve until the returned func stops it.
func (e *env) serve() func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { e.g.Serve(ctx) })
	return func() { cancel(); wg.Wait() }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthOnTheSandboxSocketFollowsReadiness(t *testing.T) {
	e := newEnv(t)
	sb := e.create("probed")
	conn, err := session.Dial(context.Background(), "unix://"+filepath.Join(e.g.socketDir(sb.ID), "gw.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health check %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	services := []string{"", "sandkey.session.v1.SupervisorSession", "sandkey.admin.v1.Admin"}
	for _, svc := range services {
		if got := check(svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q before Serve = %v, want NOT_SERVING", svc, got)
		}
	}
	stop := e.serve()
	waitFor(t, "SERVING once Serve runs", func() bool { return check("") == healthpb.HealthCheckResponse_SERVING })
	for _, svc := range services {
		if got := check(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q while serving = %v, want SERVING", svc, got)
		}
	}
	stop()
	if got := check(""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health after Serve returned = %v, want NOT_SERVING", got)
	}
}

// TestFullStoreMakesTheGatewayUnreadyUntilASweepSucceeds puts the state
// directory on a small tmpfs and fills it: sweeps fail with SQLite's
// "database or disk is full", readiness says the gateway cannot mint and
// why, the failure and expired-token metrics count it, and freeing the
// space brings everything back without a restart.
func TestFullStoreMakesTheGatewayUnreadyUntilASweepSucceeds(t *testing.T) {
	var state string
	e := newEnvWith(t, func(dir string) {
		state = filepath.Join(dir, "state")
		if err := os.Mkdir(state, 0o700); err != nil {
			t.Fatal(err)
		}
		fullfs.Mount(t, state, 4<<20)
	})
	reg := prometheus.NewRegistry()
	e.reopen(func(c *Config) { c.Registerer = reg; c.SweepInterval = 20 * time.Millisecond })
	sb := e.create("full")
	stop := e.serve()
	defer stop()
	waitFor(t, "ready", func() bool { ok, _ := e.g.Ready(); return ok })

	filler := filepath.Join(state, "filler")
	fullfs.Fill(t, filler)
	e.clock.Add(lifetime/2 + time.Second) // the token is due for rotation
	waitFor(t, "not ready", func() bool { ok, _ := e.g.Ready(); return !ok })
	_, reason := e.g.Ready()
	if !strings.Contains(reason, "cannot mint") || !strings.Contains(reason, "full") {
		t.Errorf("readiness reason %q does not say the gateway cannot mint because the store is full", reason)
	}
	waitFor(t, "failed sweeps counted", func() bool { return testutil.ToFloat64(e.g.metrics.sweepFailures) >= 2 })
	e.clock.Add(lifetime) // past the token's expiry
	if n, err := testutil.GatherAndCount(reg, "sandkey_expired_tokens"); err != nil || n != 1 {
		t.Fatalf("sandkey_expired_tokens series: %d, %v", n, err)
	}
	if got := gaugeValue(t, reg, "sandkey_expired_tokens"); got != 1 {
		t.Errorf("sandkey_expired_tokens = %v with the disk full, want 1", got)
	}
	if got := gaugeValue(t, reg, "sandkey_ready"); got != 0 {
		t.Errorf("sandkey_ready = %v with the disk full, want 0", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready again once space is back", func() bool { ok, _ := e.g.Ready(); return ok })
	got, err := e.g.Get(context.Background(), sb.ID)
	if err != nil || got.LatestGen < 2 {
		t.Fatalf("after recovery: gen %d, %v; want a rotated generation", got.LatestGen, err)
	}
	if got := gaugeValue(t, reg, "sandkey_expired_tokens"); got != 0 {
		t.Errorf("sandkey_expired_tokens = %v after recovery, want 0", got)
	}
}

func gaugeValue(t *testing.T, reg interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

func TestReadinessNamesAFailingStoreBeforeTheSweepItFailed(t *testing.T) {
	r := newReadiness()
	r.setServing(true)
	r.sweepDone(errors.New("begin: connection refused"))
	r.storeDone(errors.New("dial: connection refused"))
	if ready, why := r.state(); ready || !strings.HasPrefix(why, "store: ") {
		t.Fatalf("state = %v, %q; want not ready, naming the store first", ready, why)
	}
	r.storeDone(nil)
	if ready, why := r.state(); ready || !strings.HasPrefix(why, "cannot mint tokens: ") {
		t.Fatalf("state with the store back = %v, %q; want the sweep's failure until a sweep succeeds", ready, why)
	}
}
