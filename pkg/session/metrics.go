package session

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// serverMetrics are the gateway-side session metrics.
type serverMetrics struct {
	sessions   prometheus.Gauge
	accepted   prometheus.Counter
	pushes     prometheus.Counter
	acks       prometheus.Counter
	resends    prometheus.Counter
	rejections *prometheus.CounterVec
	exchanges  *prometheus.CounterVec // sandkey_exchange_total, by result
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "sessions",
			Help: "Supervisor sessions currently established.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "accepted_total",
			Help: "Sessions accepted (registrations), reconnections included.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "token_pushes_total",
			Help: "Tokens sent to supervisors (in Accepted or TokenUpdate), resends excluded.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "token_acks_total",
			Help: "Token acknowledgements received from supervisors.",
		}),
		resends: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "token_resends_total",
			Help: "Unacknowledged token pushes sent again.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sandkey", Subsystem: "session", Name: "rejections_total",
			Help: "Sessions refused or ended by the gateway, by code.",
		}, []string{"code"}),
		exchanges: newExchangeMetric(),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.accepted, m.pushes, m.acks, m.resends, m.rejections, m.exchanges)
	}
	return m
}

// codeLabel turns REJECT_CODE_SESSION_REPLACED into session_replaced.
func codeLabel(c sessionpb.RejectCode) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "REJECT_CODE_"))
}
