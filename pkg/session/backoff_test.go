package session

import (
	"testing"
	"time"
)

func TestBackoffDelayIsFullJitterUnderAnExponentialCeiling(t *testing.T) {
	b := Backoff{}
	cases := []struct {
		attempt int
		u       float64
		want    time.Duration
	}{
		{0, 0, 0},
		{0, 0.5, 50 * time.Millisecond},
		{1, 0.5, 100 * time.Millisecond},
		{3, 0.999999, 799999200 * time.Nanosecond},
		{8, 0.5, 12800 * time.Millisecond},
		{9, 0.5, 15 * time.Second}, // 51.2 s capped at 30 s
		{1000, 0.999, 29970 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := b.Delay(tc.attempt, tc.u); got != tc.want {
			t.Errorf("Delay(%d, %v) = %s, want %s", tc.attempt, tc.u, got, tc.want)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	b := Backoff{}.withDefaults()
	if b.Min != 100*time.Millisecond || b.Max != 30*time.Second || b.ResetAfter != 30*time.Second {
		t.Fatalf("defaults %+v", b)
	}
	if got := (Backoff{Min: time.Second, Max: time.Millisecond}).Delay(5, 0.5); got != 500*time.Millisecond {
		t.Fatalf("max below min: %s", got)
	}
}
