package k8se2e

import (
	"context"
	"sort"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
)

// BenchmarkExchange measures the whole exchange as a pod sees it (TLS,
// the gateway, TokenReview, the live pod's GET, the store) against a bare
// TokenReview of the same projected token on the same API server: the
// difference is what sandkey adds. Latency percentiles are reported as
// p50-ns and p99-ns. Calls are paced (benchPace apart): the gateway's
// client-go limits itself to kubernetesQPS, and a tight loop would measure
// that limiter, not the latency of one exchange.
func BenchmarkExchange(b *testing.B) {
	e := newEnv(b)
	sb := e.create("bench")
	e.awaitConnected("bench")
	projected := e.projectedToken("bench")
	client := e.c.ConfigFor(b, "bench-reviewer", "system:masters")
	client.QPS, client.Burst = -1, 0 // paced below; no client-side limit
	reviews := kubernetesClient(b, client).AuthenticationV1().TokenReviews()

	b.Run("TokenReview", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			pace()
			start := time.Now()
			r, err := reviews.Create(context.Background(), &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{
				Token: projected, Audiences: []string{kubernetes.DefaultAudience}}}, metav1.CreateOptions{})
			if err != nil || !r.Status.Authenticated {
				b.Fatalf("TokenReview: %v %+v", err, r)
			}
			lat = append(lat, time.Since(start))
		}
		reportPercentiles(b, lat)
	})
	b.Run("Exchange", func(b *testing.B) {
		c := e.exchangeClient(sb.ID)
		defer c.Close()
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			pace()
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, _, err := c.Exchange(ctx, projected); err != nil {
				b.Fatal(err)
			}
			cancel()
			lat = append(lat, time.Since(start))
		}
		reportPercentiles(b, lat)
	})
}

// benchPace spaces calls: at most 25 exchanges (50 API calls) a second,
// half of what the gateway's client allows itself.
const benchPace = 40 * time.Millisecond

var lastCall time.Time

func pace() {
	time.Sleep(time.Until(lastCall.Add(benchPace)))
	lastCall = time.Now()
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
