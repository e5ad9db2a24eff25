package sandboxlock

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestOneSandboxIsSerialisedOthersAreNot(t *testing.T) {
	var s Set
	var inside atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			unlock := s.Lock("a")
			if inside.Add(1) != 1 {
				t.Error("two holders of the same sandbox's lock")
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		})
	}
	// Another sandbox's lock is free while "a" is busy.
	unlockA := s.Lock("a")
	done := make(chan struct{})
	go func() { s.Lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sandbox b waited for sandbox a")
	}
	unlockA()
	wg.Wait()
	if n := s.Len(); n != 0 {
		t.Fatalf("%d entries left after every lock was released", n)
	}
}
