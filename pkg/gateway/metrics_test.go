package gateway

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// openWithRegistry opens e's gateway again with its metrics on a fresh
// registry.
func (e *env) openWithRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	e.reopen(func(c *Config) { c.Registerer = reg })
	return reg
}

// reopen closes e's gateway and opens it again on the same state with
// e.config() as mod changes it.
func (e *env) reopen(mod func(*Config)) {
	e.t.Helper()
	e.g.Close()
	cfg := e.config()
	mod(&cfg)
	g, err := Open(context.Background(), cfg)
	if err != nil {
		e.g = nil
		e.t.Fatal(err)
	}
	e.g = g
}

func TestEveryRejectionReasonIsExportedBeforeTheFirstRejection(t *testing.T) {
	e := newEnv(t)
	reg := e.openWithRegistry()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "sandkey_token_rejections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					got[l.GetValue()] = true
				}
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%v = %v before any rejection", m.GetLabel(), v)
			}
		}
	}
	for _, reason := range []string{"malformed", "signature", "unknown_key", "expired", "claims", "sandbox_mismatch",
		"unknown_sandbox", "superseded", "not_issued", "other"} {
		if !got[reason] {
			t.Errorf("sandkey_token_rejections_total{reason=%q} not exported at start (have %v)", reason, got)
		}
	}
}

func TestReplicaMetricsAreExported(t *testing.T) {
	e := newEnv(t)
	reg := e.openWithRegistry()
	stop := e.serve()
	defer stop()
	waitFor(t, "leading", func() bool { ok, _ := e.g.Leader(); return ok })
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	for _, name := range []string{"sandkey_leader", "sandkey_leader_epoch", "sandkey_leader_changes_total",
		"sandkey_fanout_total", "sandkey_fanout_seconds", "sandkey_store_up"} {
		if !got[name] {
			t.Errorf("%s is not exported", name)
		}
	}
	if v := gaugeValue(t, reg, "sandkey_leader"); v != 1 {
		t.Errorf("sandkey_leader = %v on a single gateway that serves, want 1", v)
	}
}
