package session

import "time"

// Clock is the session server's clock for heartbeats: when to beat, how
// long a supervisor has been silent or has not read, and when an
// unacknowledged push is resent. It is separate from ServerConfig.Now,
// which judges credentials: a test can expire tokens without moving the
// heartbeats, or drive the heartbeats without waiting in real time.
type Clock interface {
	Now() time.Time
	// NewTicker ticks every d until stopped, as time.NewTicker does.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a Clock's ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealClock is the machine's clock, the default.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTicker returns a time.Ticker.
func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }
