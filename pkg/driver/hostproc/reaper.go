package hostproc

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper collects the exits of the processes a driver started as children
// of this process, so none stays a zombie, and hands each wait status to
// the callback its child was registered with. It waits for each
// registered pid by itself (wait4(pid, WNOHANG) on every SIGCHLD), never
// wait4(-1), which would steal other code's children.
type Reaper struct {
	mu       sync.Mutex
	children map[Process]*child

	sigchld chan os.Signal
	wake    chan struct{}
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewReaper starts a reaper; Close stops it.
func NewReaper() *Reaper {
	r := &Reaper{
		children: make(map[Process]*child),
		sigchld:  make(chan os.Signal, 1),
		wake:     make(chan struct{}, 1),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	signal.Notify(r.sigchld, unix.SIGCHLD)
	r.wg.Go(func() { r.run(r.ctx) })
	return r
}

// Close stops the reaper; children still running are left to whoever
// inherits them, and their Add channels stay open.
func (r *Reaper) Close() {
	signal.Stop(r.sigchld)
	r.cancel()
	r.wg.Wait()
}

// child is a registered child process.
type child struct {
	done   chan struct{} // closed once reaped
	onExit func(unix.WaitStatus, error)
}

// Add registers p, a child of this process, and returns a channel closed
// once it has been reaped. onExit, if not nil, gets its wait status
// first, or the error of a wait that found it gone (someone else in this
// process reaped it, and its status is lost). onExit runs under the
// reaper's lock: it must not call the reaper. Adding a registered child
// again returns its channel and keeps its first onExit.
func (r *Reaper) Add(p Process, onExit func(unix.WaitStatus, error)) <-chan struct{} {
	r.mu.Lock()
	c, ok := r.children[p]
	if !ok {
		c = &child{done: make(chan struct{}), onExit: onExit}
		r.children[p] = c
	}
	r.mu.Unlock()
	select { // it may have ended before it was registered
	case r.wake <- struct{}{}:
	default:
	}
	return c.done
}

// Done returns the channel of a registered, unreaped child, or nil.
func (r *Reaper) Done(p Process) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.children[p]; ok {
		return c.done
	}
	return nil
}

// Running reports whether p, a registered child, still runs: it collects
// the registered children that have ended first, so that p never reads as
// running while a zombie and its exit has reached onExit before this
// returns. ok is false when p is not registered.
func (r *Reaper) Running(p Process) (running, ok bool) {
	done := r.Done(p)
	if done == nil {
		return false, false
	}
	r.reapAll()
	select {
	case <-done:
		return false, true
	default:
		return true, true
	}
}

// WaitEnded waits up to timeout for p to end, and reports whether it
// did. While p is a registered child and the reaper runs, it waits for the
// reaper to collect it; otherwise (p is not this process's child, or the
// reaper was closed) it asks running every interval. At the timeout it
// asks running once more. The end of ctx is an error.
func (r *Reaper) WaitEnded(ctx context.Context, p Process, timeout, interval time.Duration, running func() bool) (bool, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if done := r.Done(p); done != nil {
		select {
		case <-done:
			return true, nil
		case <-timer.C:
			return !running(), nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-r.ctx.Done(): // closed: poll below
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if !running() {
			return true, nil
		}
		select {
		case <-tick.C:
		case <-timer.C:
			return !running(), nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (r *Reaper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.sigchld:
		case <-r.wake:
		}
		r.reapAll()
	}
}

// reapAll collects every registered child that has ended.
func (r *Reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, c := range r.children {
		var ws unix.WaitStatus
		pid, err := WaitNoHang(p.PID, &ws)
		if err == nil && pid == 0 {
			continue // still running
		}
		if c.onExit != nil {
			c.onExit(ws, err)
		}
		delete(r.children, p)
		close(c.done)
	}
}

// WaitNoHang is wait4(pid, WNOHANG), retried on EINTR: it returns 0 while
// pid runs, pid once it has collected its exit.
func WaitNoHang(pid int, ws *unix.WaitStatus) (int, error) {
	for {
		wpid, err := unix.Wait4(pid, ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return wpid, err
		}
	}
}
