// Package testclock is a clock that tests set by hand, for the policies
// that take an injected clock: token expiry and rotation, heartbeats,
// re-exchange. It is safe for concurrent use.
package testclock

import (
	"sync"
	"time"
)

// Clock reads the time it was last set to.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock reading now.
func New(now time.Time) *Clock { return &Clock{now: now} }

// Now returns the clock's time; pass it where a func() time.Time is
// injected.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock by d (back, when d is negative).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
