package gateway

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// readiness is what /readyz and the gRPC health service report: the
// gateway is ready once Serve runs (reconciliation is done), and stops
// being ready while it cannot mint, that is from a failed rotation sweep to
// the next one that succeeds. It recovers by itself: every sweep retries.
type readiness struct {
	mu       sync.Mutex
	serving  bool
	mintErr  error
	storeErr error    // the last store heartbeat's failure
	services []string // gRPC service names whose health follows readiness
	health   *health.Server
}

func newReadiness(services ...string) *readiness {
	r := &readiness{health: health.NewServer(), services: append([]string{""}, services...)}
	r.publish()
	return r
}

// state returns whether the gateway is ready and, when not, why.
func (r *readiness) state() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stateLocked()
}

func (r *readiness) stateLocked() (bool, string) {
	switch {
	case !r.serving:
		return false, "reconciling sandboxes"
	// A store that fails is named first: a failed sweep is then only
	// its consequence.
	case r.storeErr != nil:
		return false, fmt.Sprintf("store: %v", r.storeErr)
	case r.mintErr != nil:
		return false, fmt.Sprintf("cannot mint tokens: %v", r.mintErr)
	}
	return true, ""
}

func (r *readiness) setServing(serving bool) {
	r.mu.Lock()
	r.serving = serving
	r.mu.Unlock()
	r.publish()
}

// sweepDone records a sweep's outcome: nil clears a previous failure.
// It reports whether readiness changed.
func (r *readiness) sweepDone(err error) bool {
	r.mu.Lock()
	changed := (err == nil) != (r.mintErr == nil)
	r.mintErr = err
	r.mu.Unlock()
	if changed {
		r.publish()
	}
	return changed
}

// storeDone records a store heartbeat's outcome: nil clears a previous
// failure. It reports whether readiness changed.
func (r *readiness) storeDone(err error) bool {
	r.mu.Lock()
	changed := (err == nil) != (r.storeErr == nil)
	r.storeErr = err
	r.mu.Unlock()
	if changed {
		r.publish()
	}
	return changed
}

// publish copies readiness into the gRPC health service.
func (r *readiness) publish() {
	ready, _ := r.state()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range r.services {
		r.health.SetServingStatus(svc, st)
	}
}
