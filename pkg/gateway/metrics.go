package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandkey/sandkey/pkg/auth"
)

// Rejection reasons the gateway adds to the verifier's (auth.Reasons) once
// a token verifies but the store refuses it.
const (
	reasonUnknownSandbox = "unknown_sandbox"
	reasonSuperseded     = "superseded"
	reasonNotIssued      = "not_issued"
)

// rejectionReasons are every label of sandkey_token_rejections_total,
// exported at 0 from the start so that a rate or an alert on any of them
// works before the first rejection.
func rejectionReasons() []string {
	return append(auth.Reasons(), reasonUnknownSandbox, reasonSuperseded, reasonNotIssued)
}

type metrics struct {
	minted        *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	rotationLag   prometheus.Histogram
	mintDuration  prometheus.Histogram
	writeFailures prometheus.Counter
	pruned        prometheus.Counter
	floorRaised   *prometheus.CounterVec
	sweepFailures prometheus.Counter

	// Replicas (replica.go).
	leader        prometheus.Gauge
	leaderEpoch   prometheus.Gauge
	leaderChanges prometheus.Counter
	fanout        *prometheus.CounterVec
	fanoutSeconds prometheus.Histogram
	storeUp       prometheus.Gauge
}

// Results of fanning a generation out to a local session
// (sandkey_fanout_total).
const (
	fanoutPushed  = "pushed"  // re-signed and pushed to the local session
	fanoutCurrent = "current" // the session already had it (minted here)
	fanoutFailed  = "failed"  // the store or the re-signing failed
)

// newMetrics registers the gateway's metrics on reg (none when nil).
func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	m := &metrics{
		minted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_tokens_minted_total", Help: "Token generations minted, by reason (start, rotation, reconcile, manual, reissue, recover).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_token_rejections_total", Help: "Tokens refused when authenticating supervisors, by reason.",
		}, []string{"reason"}),
		rotationLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sandkey_rotation_lag_seconds", Help: "How long after its rotation point a token was rotated.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2, 5, 10, 30, 60},
		}),
		mintDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sandkey_mint_batch_seconds", Help: "Time to commit, write and push one batch of generations.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandkey_token_dir_write_failures_total", Help: "Token directory writes that failed.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandkey_generations_pruned_total", Help: "Records of generations that can no longer authenticate, deleted.",
		}),
		floorRaised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_generation_floor_raised_total",
			Help: "Generations seen signed above the store's counter (a store restored from backup), by where they were seen (directory, presented).",
		}, []string{"evidence"}),
		sweepFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandkey_sweep_failures_total", Help: "Rotation sweeps that failed (tokens due were not rotated).",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sandkey_leader", Help: "1 while this gateway holds the leader lease (sweeps, prunes, activates keys), else 0.",
		}),
		leaderEpoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sandkey_leader_epoch", Help: "Epoch of the leader lease this gateway last held.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandkey_leader_changes_total", Help: "Times this gateway gained or lost the leader lease.",
		}),
		fanout: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandkey_fanout_total", Help: "Generations heard from the store for sessions held here, by result (pushed, current, failed).",
		}, []string{"result"}),
		fanoutSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sandkey_fanout_seconds", Help: "From hearing a generation another replica committed to pushing it to the session held here.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sandkey_store_up", Help: "1 while the store answers the gateway's heartbeats, else 0.",
		}),
	}
	for _, result := range []string{fanoutPushed, fanoutCurrent, fanoutFailed} {
		m.fanout.WithLabelValues(result)
	}
	for _, reason := range rejectionReasons() {
		m.rejected.WithLabelValues(reason)
	}
	if reg == nil {
		return m
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sandkey_pending_deliveries", Help: "Running sandboxes whose newest generation the supervisor has not acknowledged.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		pending, err := g.store.PendingDeliveries(ctx)
		if err != nil {
			return -1
		}
		return float64(len(pending))
	})
	expired := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sandkey_expired_tokens", Help: "Running sandboxes whose newest token has expired (rotation is failing or late).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := g.store.CountExpired(ctx, g.now())
		if err != nil {
			return -1
		}
		return float64(n)
	})
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sandkey_ready", Help: "1 when the gateway is ready (reconciled and able to mint), else 0.",
	}, func() float64 {
		if ok, _ := g.Ready(); ok {
			return 1
		}
		return 0
	})
	memory := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sandkey_token_dir_memory_backed", Help: "1 when the token directories are on a memory-backed file system (tmpfs, ramfs), 0 when tokens reach a disk.",
	}, func() float64 {
		if g.tokens.MemoryBacked {
			return 1
		}
		return 0
	})
	reg.MustRegister(memory, m.minted, m.rejected, m.rotationLag, m.mintDuration, m.writeFailures, m.pruned, m.sweepFailures, m.floorRaised,
		pending, expired, ready,
		m.leader, m.leaderEpoch, m.leaderChanges, m.fanout, m.fanoutSeconds, m.storeUp)
	return m
}
