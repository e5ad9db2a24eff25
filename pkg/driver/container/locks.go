package container

import "sync"

// sandboxLocks serialises the operations on one sandbox, so that two
// Starts never both find its container missing and both create it, while
// operations on different sandboxes (a Stop waiting out its grace) run
// side by side.
type sandboxLocks struct {
	mu   sync.Mutex
	held map[string]*sandboxLock
}

type sandboxLock struct {
	sync.Mutex
	users int // holders and waiters; the entry goes when none is left
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
