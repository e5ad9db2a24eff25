package testclock

import (
	"sync"
	"testing"
	"time"
)

func TestClockMovesOnlyWhenToldAndIsSafeToShare(t *testing.T) {
	start := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	c := New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { c.Add(time.Second); _ = c.Now() })
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(8*time.Second); !got.Equal(want) {
		t.Fatalf("after eight concurrent one-second moves Now = %v, want %v", got, want)
	}
	c.Add(-time.Minute)
	if got, want := c.Now(), start.Add(8*time.Second-time.Minute); !got.Equal(want) {
		t.Fatalf("after a move back Now = %v, want %v", got, want)
	}
}
