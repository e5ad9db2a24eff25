package session

import "time"

const (
	// DefaultBackoffMin is the first reconnect delay's upper bound.
	DefaultBackoffMin = 100 * time.Millisecond
	// DefaultBackoffMax caps the reconnect delay.
	DefaultBackoffMax = 30 * time.Second
	// DefaultBackoffReset is how long a session must stay up for the next
	// reconnect to start from DefaultBackoffMin again.
	DefaultBackoffReset = 30 * time.Second
)

// Backoff is the supervisor's reconnect policy: exponential backoff with
// full jitter (a uniform delay in [0, min(Max, Min*2^attempt))), so that a
// thousand supervisors cut off together do not reconnect together.
type Backoff struct {
	Min        time.Duration // DefaultBackoffMin when zero
	Max        time.Duration // DefaultBackoffMax when zero
	ResetAfter time.Duration // DefaultBackoffReset when zero
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = DefaultBackoffReset
	}
	return b
}

// Delay returns the delay before reconnect attempt number attempt (0 for
// the first), given u uniform in [0, 1).
func (b Backoff) Delay(attempt int, u float64) time.Duration {
	b = b.withDefaults()
	ceiling := b.Min
	for i := 0; i < attempt && ceiling < b.Max; i++ {
		ceiling *= 2
	}
	if ceiling > b.Max {
		ceiling = b.Max
	}
	return time.Duration(u * float64(ceiling))
}
