package vm

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
)

// reaper collects the exits of the processes this gateway process started
// (VMMs and virtiofsd), so none stays a zombie, and hands each wait status
// to the callback its child was registered with. It waits for each registered pid by itself
// (wait4(pid, WNOHANG) on every SIGCHLD), never wait4(-1), which would
// steal other code's children.
type reaper struct {
	mu       sync.Mutex
	children map[hostproc.Process]*child

	sigchld chan os.Signal
	wake    chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newReaper() *reaper {
	r := &reaper{
		children: make(map[hostproc.Process]*child),
		sigchld:  make(chan os.Signal, 1),
		wake:     make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	signal.Notify(r.sigchld, unix.SIGCHLD)
	r.wg.Go(func() { r.run(ctx) })
	return r
}

// close stops the reaper; children still running are left to whoever
// inherits them.
func (r *reaper) close() {
	signal.Stop(r.sigchld)
	r.cancel()
	r.wg.Wait()
}

// child is a registered child process.
type child struct {
	done   chan struct{} // closed once reaped
	onExit func(unix.WaitStatus)
}

// add registers p, a child of this process, and returns a channel closed
// once it has been reaped; onExit, if not nil, gets its wait status first
// (under the reaper's lock: it must not call the reaper).
func (r *reaper) add(p hostproc.Process, onExit func(unix.WaitStatus)) <-chan struct{} {
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

// done returns the channel of a registered, unreaped child, or nil.
func (r *reaper) done(p hostproc.Process) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.children[p]; ok {
		return c.done
	}
	return nil
}

// reapNow collects the registered children that have ended, at once: a
// caller that then finds p registered knows it runs.
func (r *reaper) reapNow() { r.reapAll() }

func (r *reaper) run(ctx context.Context) {
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
func (r *reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, c := range r.children {
		var ws unix.WaitStatus
		pid, err := wait4NoHang(p.PID, &ws)
		if err == nil && pid == 0 {
			continue // still running
		}
		// On error (ECHILD) someone else reaped it and its status is lost.
		if err == nil && c.onExit != nil {
			c.onExit(ws)
		}
		delete(r.children, p)
		close(c.done)
	}
}

func wait4NoHang(pid int, ws *unix.WaitStatus) (int, error) {
	for {
		wpid, err := unix.Wait4(pid, ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return wpid, err
		}
	}
}
