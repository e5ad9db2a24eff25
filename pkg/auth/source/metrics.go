package source

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rejected   *prometheus.CounterVec
	accepted   *prometheus.CounterVec
	generation prometheus.Gauge
}

// newMetrics makes the source's metrics and registers them with reg when
// it is not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_supervisor_token_rejected_total",
			Help: "Token candidates the supervisor rejected, by reason and origin (dir, session-hello, session-push).",
		}, []string{"reason", "origin"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_supervisor_token_accepted_total",
			Help: "Tokens the supervisor accepted as its current token, by origin.",
		}, []string{"origin"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sandkey_supervisor_token_generation",
			Help: "Generation of the supervisor's current token (0: none).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{m.rejected, m.accepted, m.generation}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
