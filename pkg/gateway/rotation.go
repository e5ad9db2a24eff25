package gateway

import (
	"math/rand/v2"
	"time"
)

// rotationJitter is the largest extra delay, as a fraction of the lifetime,
// added to a token's rotation point, so that sandboxes started together do
// not rotate in lockstep forever.
const rotationJitter = 0.10

// RotationPoint is when a token minted at iat with the given lifetime is
// due for rotation: half the lifetime plus jitter in [0, 10%) of it. jitter
// is a number in [0, 1).
func RotationPoint(iat time.Time, lifetime time.Duration, jitter float64) time.Time {
	return iat.Add(lifetime/2 + time.Duration(jitter*rotationJitter*float64(lifetime)))
}

// defaultJitter draws rotation jitter.
func defaultJitter() float64 { return rand.Float64() }
