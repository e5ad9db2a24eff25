package process

import "sync"

// sandboxLocks serialises the operations on one sandbox (two Starts must
// not both find it stopped and both launch it) while letting operations on
// different sandboxes, such as a Stop waiting out its grace, run side by
// side.
type sandboxLocks struct {
	mu   sync.Mutex
	held map[string]*sandboxLock
}

type sandboxLock struct {
	sync.Mutex
	users int // holders and waiters; the entry goes when it drops to zero
}

// lock locks sandbox id and returns its unlock function.
func (l *sandboxLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.held == nil {
		l.held = make(map[string]*sandboxLock)
	}
	e := l.held[id]
	if e == nil {
		e = &sandboxLock{}
		l.held[id] = e
	}
	e.users++
	l.mu.Unlock()

	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.held, id)
		}
		l.mu.Unlock()
	}
}
