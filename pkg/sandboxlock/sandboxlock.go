// Package sandboxlock serialises the operations on one sandbox (two
// Starts must not both find it stopped and both launch it) while letting
// operations on different sandboxes, such as a Stop waiting out its grace,
// run side by side. An entry lives only while someone holds or waits for
// it, so deleted sandboxes leave nothing behind.
package sandboxlock

import "sync"

// Set is a set of per-sandbox locks. The zero value is ready to use.
type Set struct {
	mu   sync.Mutex
	held map[string]*entry
}

type entry struct {
	sync.Mutex
	users int // holders and waiters; the entry goes when none is left
}

// Lock locks sandbox id and returns its unlock function.
func (s *Set) Lock(id string) (unlock func()) {
	s.mu.Lock()
	if s.held == nil {
		s.held = make(map[string]*entry)
	}
	e := s.held[id]
	if e == nil {
		e = &entry{}
		s.held[id] = e
	}
	e.users++
	s.mu.Unlock()

	e.Lock()
	return func() {
		e.Unlock()
		s.mu.Lock()
		if e.users--; e.users == 0 {
			delete(s.held, id)
		}
		s.mu.Unlock()
	}
}

// Len returns how many sandboxes are locked or awaited.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}
