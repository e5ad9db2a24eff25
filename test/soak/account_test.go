package soak

import (
	"sort"
	"sync"
	"testing"
	"time"
)

// window is a span in which a sandbox's token may legitimately be
// unacceptable: from the disturbing event's start to RecoveryBound after
// its end (see the package doc).
type window struct {
	kind  string
	slot  string    // the sandbox's name; "" for every sandbox
	from  time.Time // the event's start
	end   time.Time // the event's end; zero while it lasts
	event int       // the chaos event's number
}

// covers reports whether at, for slot, falls in the window.
func (w *window) covers(slot string, at time.Time, bound time.Duration) bool {
	if w.slot != "" && w.slot != slot {
		return false
	}
	if at.Before(w.from) {
		return false
	}
	return w.end.IsZero() || !at.After(w.end.Add(bound))
}

// sample is one sandbox's verdict at one moment.
type sample struct {
	at   time.Time
	slot string
	ok   bool
	why  string
}

// tally counts samples inside and outside the recovery windows.
type tally struct {
	bound time.Duration

	mu      sync.Mutex
	windows []*window
	// sandbox-seconds, all of them and those outside every window, and
	// how many of each held an accepted token.
	total, totalOK     int
	outside, outsideOK int
	failures           []sample // unavailable outside every window
	// the longest run of unavailable samples outside windows, per slot
	run     map[string][2]time.Time // slot -> first and last failing sample of the current run
	longest time.Duration
}

func newTally(bound time.Duration) *tally {
	return &tally{bound: bound, run: map[string][2]time.Time{}}
}

// open starts a window; close ends it.
func (t *tally) open(kind, slot string, from time.Time, event int) *window {
	w := &window{kind: kind, slot: slot, from: from, event: event}
	t.mu.Lock()
	t.windows = append(t.windows, w)
	t.mu.Unlock()
	return w
}

func (t *tally) close(w *window, end time.Time) {
	t.mu.Lock()
	w.end = end
	t.mu.Unlock()
}

func (t *tally) add(s sample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total++
	if s.ok {
		t.totalOK++
	}
	for _, w := range t.windows {
		if w.covers(s.slot, s.at, t.bound) {
			return
		}
	}
	t.outside++
	if s.ok {
		t.outsideOK++
		delete(t.run, s.slot)
		return
	}
	t.failures = append(t.failures, s)
	r, ok := t.run[s.slot]
	if !ok {
		r[0] = s.at
	}
	r[1] = s.at
	t.run[s.slot] = r
	t.longest = max(t.longest, r[1].Sub(r[0]))
}

// counts is a snapshot of a tally.
type counts struct {
	total, totalOK, outside, outsideOK int
	failures                           []sample
	longestFailing                     time.Duration // first to last sample of the longest run
	windows                            int
}

func (t *tally) counts() counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := append([]sample(nil), t.failures...)
	sort.Slice(f, func(i, j int) bool { return f[i].at.Before(f[j].at) })
	return counts{total: t.total, totalOK: t.totalOK, outside: t.outside, outsideOK: t.outsideOK,
		failures: f, longestFailing: t.longest, windows: len(t.windows)}
}

func TestWindowCoversFromItsStartToTheBoundAfterItsEnd(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &window{slot: "a", from: t0, end: t0.Add(3 * time.Second)}
	all := &window{from: t0}
	for _, tc := range []struct {
		w    *window
		slot string
		at   time.Duration
		want bool
	}{
		{w, "a", -time.Millisecond, false},
		{w, "a", 0, true},
		{w, "a", 8 * time.Second, true}, // end + bound, inclusive
		{w, "a", 8*time.Second + time.Millisecond, false},
		{w, "b", time.Second, false},
		{all, "b", time.Hour, true}, // open: covers until closed
	} {
		if got := tc.w.covers(tc.slot, t0.Add(tc.at), 5*time.Second); got != tc.want {
			t.Errorf("window %+v covers(%s, +%s) = %v, want %v", tc.w, tc.slot, tc.at, got, tc.want)
		}
	}
}

func TestTallyCountsFailuresOutsideWindowsOnly(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ta := newTally(5 * time.Second)
	w := ta.open("gateway crash", "", t0.Add(10*time.Second), 1)
	ta.close(w, t0.Add(12*time.Second))
	for i := range 30 {
		at := t0.Add(time.Duration(i) * time.Second)
		// a: down from 10 s to 16 s, inside the crash window (10 s to 17 s).
		ta.add(sample{at: at, slot: "a", ok: i < 10 || i > 16})
		// b: down from 20 s to 22 s, outside every window.
		ta.add(sample{at: at, slot: "b", ok: i < 20 || i > 22, why: "expired"})
	}
	c := ta.counts()
	if c.total != 60 || c.totalOK != 60-7-3 {
		t.Errorf("total %d ok %d, want 60 and 50", c.total, c.totalOK)
	}
	if c.outside != 60-16 || c.outsideOK != c.outside-3 {
		t.Errorf("outside %d ok %d, want 44 and 41", c.outside, c.outsideOK)
	}
	if len(c.failures) != 3 || c.failures[0].slot != "b" || c.longestFailing != 2*time.Second {
		t.Errorf("failures %+v, longest %s", c.failures, c.longestFailing)
	}
}
