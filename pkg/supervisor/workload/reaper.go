package workload

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// DefaultOutputDrain is how long a finished child's output may keep
// flowing, from descendants that still hold its pipes, before the Reaper
// closes them and publishes the exit.
const DefaultOutputDrain = time.Second

// ErrReaperActive is returned by NewReaper while another Reaper of the
// process is open: two callers of wait4(-1) would steal each other's
// statuses.
var ErrReaperActive = errors.New("another reaper is active in this process")

// ErrReaperClosed is returned by Start after Close.
var ErrReaperClosed = errors.New("reaper closed")

// reaperActive enforces one Reaper per process. It is global because the
// thing it guards, the process's children, is.
var reaperActive atomic.Bool

// ReaperConfig configures a Reaper. The zero value is ready to use.
type ReaperConfig struct {
	// OutputDrain bounds the wait for a child's output after its exit
	// (default DefaultOutputDrain).
	OutputDrain time.Duration
	Logger      *zap.Logger
}

// Reaper reaps every child of the process and publishes the exits of the
// children started through it. See the package doc for the algorithm.
type Reaper struct {
	log   *zap.Logger
	drain time.Duration

	// forkLock is held for reading from fork to registration, and for
	// writing across a reap pass and Close.
	forkLock sync.RWMutex
	mu       sync.Mutex // guards children (Starts run concurrently)
	children map[int]*child
	closed   bool // under forkLock

	orphans atomic.Uint64

	sigchld   chan os.Signal
	quit      chan struct{}
	loopDone  chan struct{}
	wg        sync.WaitGroup // finishers and copies
	setReaper bool
	closeOnce sync.Once
}

// child is a started, not yet reaped, child.
type child struct {
	cmd    *exec.Cmd
	pid    int
	group  bool // leads its own process group
	status chan unix.WaitStatus
	io     *childIO
}

// NewReaper subscribes to SIGCHLD, makes the process a child subreaper
// unless it is PID 1, and starts the reaping goroutine. Close undoes all
// three.
func NewReaper(cfg ReaperConfig) (*Reaper, error) {
	if !reaperActive.CompareAndSwap(false, true) {
		return nil, ErrReaperActive
	}
	r := &Reaper{
		log:      cfg.Logger,
		drain:    cfg.OutputDrain,
		children: make(map[int]*child),
		sigchld:  make(chan os.Signal, 1),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.drain <= 0 {
		r.drain = DefaultOutputDrain
	}
	if os.Getpid() != 1 {
		was, err := isSubreaper()
		if err != nil {
			reaperActive.Store(false)
			return nil, err
		}
		if !was {
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				reaperActive.Store(false)
				return nil, fmt.Errorf("become child subreaper: %w", err)
			}
			r.setReaper = true
		}
	}
	signal.Notify(r.sigchld, unix.SIGCHLD)
	go r.loop()
	// Children that ended before the subscription sent no signal we saw.
	select {
	case r.sigchld <- unix.SIGCHLD:
	default: // one is pending already
	}
	return r, nil
}

func isSubreaper() (bool, error) {
	var v int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0); err != nil {
		return false, fmt.Errorf("query child subreaper: %w", err)
	}
	return v != 0, nil
}

// Start starts cmd and returns a channel that receives cmd's Exit once it
// ended and its output was copied, and is then closed. If the Reaper is
// closed first, the channel is closed without a value. Never call cmd.Wait
// on cmd. cmd.Process.Signal is safe at any time (it uses a pidfd, and
// returns os.ErrProcessDone once the child is reaped); the pidfd is closed
// when cmd is garbage, or by cmd.Process.Release once the Exit arrived. A
// cmd built with exec.CommandContext is refused: its context is only
// watched by cmd.Wait.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan Exit, error) {
	if cmd.Process != nil {
		return nil, fmt.Errorf("start %s: already started", cmd.Path)
	}
	if cmd.Cancel != nil {
		return nil, fmt.Errorf("start %s: exec.CommandContext is not supported, stop the child with Kill", cmd.Path)
	}
	cio, err := pipeStdio(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: pipe stdio: %w", cmd.Path, err)
	}

	r.forkLock.RLock()
	if r.closed {
		r.forkLock.RUnlock()
		cio.closeAll()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, ErrReaperClosed)
	}
	if err := cmd.Start(); err != nil {
		r.forkLock.RUnlock()
		cio.closeAll()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	c := &child{
		cmd:    cmd,
		pid:    cmd.Process.Pid,
		group:  leadsGroup(cmd.SysProcAttr),
		status: make(chan unix.WaitStatus, 1),
		io:     cio,
	}
	r.mu.Lock()
	r.children[c.pid] = c
	r.mu.Unlock()
	// Add to wg before the unlock: Close waits only after taking the lock.
	r.wg.Add(1)
	cio.started(&r.wg)
	r.forkLock.RUnlock()

	exit := make(chan Exit, 1)
	go r.finish(c, exit)
	return exit, nil
}

// leadsGroup reports whether the child leads a process group of its own;
// a child in a new session (Setsid) does too.
func leadsGroup(attr *syscall.SysProcAttr) bool {
	return attr != nil && (attr.Setsid || attr.Pgid == 0 && (attr.Setpgid || attr.Foreground))
}

// Kill sends sig to the child pid started by Start: to its whole process
// group when it leads one, else to the child alone. Once the child is
// reaped it returns os.ErrProcessDone, so a recycled pid is never hit.
func (r *Reaper) Kill(pid int, sig syscall.Signal) error {
	r.forkLock.RLock()
	defer r.forkLock.RUnlock()
	r.mu.Lock()
	c, ok := r.children[pid]
	r.mu.Unlock()
	if !ok {
		return os.ErrProcessDone
	}
	target := pid
	if c.group {
		target = -pid
	}
	if err := unix.Kill(target, sig); err != nil {
		return fmt.Errorf("signal %d with %v: %w", target, sig, err)
	}
	return nil
}

// OrphansReaped counts the processes reaped that Start did not start.
func (r *Reaper) OrphansReaped() uint64 { return r.orphans.Load() }

// Close stops reaping, unsubscribes from SIGCHLD, restores the subreaper
// attribute, and waits for the Reaper's goroutines. Children still running
// will not have their exits published.
func (r *Reaper) Close() {
	r.closeOnce.Do(func() {
		r.forkLock.Lock()
		r.closed = true
		r.forkLock.Unlock()
		close(r.quit)
		<-r.loopDone
		signal.Stop(r.sigchld)
		r.wg.Wait()
		if r.setReaper {
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
				r.log.Warn("restore child subreaper", zap.Error(err))
			}
		}
		reaperActive.Store(false)
	})
}

func (r *Reaper) loop() {
	defer close(r.loopDone)
	for {
		select {
		case <-r.sigchld:
			r.reapPass()
		case <-r.quit:
			return
		}
	}
}

// reapPass reaps every exited child, without blocking.
func (r *Reaper) reapPass() {
	r.forkLock.Lock()
	defer r.forkLock.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none exited
			return
		}
		r.mu.Lock()
		c, ok := r.children[pid]
		delete(r.children, pid)
		r.mu.Unlock()
		if !ok {
			r.orphans.Add(1)
			r.log.Debug("reaped orphan", zap.Int("pid", pid), zap.Stringer("exit", exitFromStatus(ws)))
			continue
		}
		c.status <- ws // buffered, one send per child
	}
}

// finish publishes c's exit once it is reaped and its output copied.
func (r *Reaper) finish(c *child, exit chan<- Exit) {
	defer r.wg.Done()
	defer close(exit)
	select {
	case ws := <-c.status:
		c.io.drain(r.drain)
		e := exitFromStatus(ws)
		r.log.Debug("child exited", zap.Int("pid", c.pid), zap.String("path", c.cmd.Path), zap.Stringer("exit", e))
		exit <- e
	case <-r.quit:
		c.io.closeAll()
	}
}
