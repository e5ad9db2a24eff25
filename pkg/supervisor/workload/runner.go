package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// DefaultGrace is how long a workload has between SIGTERM and SIGKILL.
const DefaultGrace = 10 * time.Second

// forwarded are the signals the supervisor passes on to the workload.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

// Config describes the workload.
type Config struct {
	// Argv is the command and its arguments; Argv[0] is looked up in the
	// supervisor's PATH when it has no slash.
	Argv []string
	// Env is the workload's environment; nil inherits the supervisor's.
	Env []string
	// Dir is the working directory; empty inherits the supervisor's.
	Dir string
	// UID and GID, when set, run the workload as that user and group, with
	// Groups as its supplementary groups (none when empty). One left nil
	// keeps the supervisor's own (as `docker run --user 1000` keeps group
	// 0). LookupUser resolves an image's USER into all three.
	UID, GID *uint32
	Groups   []uint32
	// Grace is the time between SIGTERM and SIGKILL (default DefaultGrace).
	Grace time.Duration
	// OutputDrain bounds the wait for output after an exit (default
	// DefaultOutputDrain); it applies to every child of the Reaper.
	OutputDrain time.Duration
	// Standard streams; see the package doc for non-file values.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Logger         *zap.Logger
}

// Runner runs one workload and owns the process's Reaper and its signal
// forwarding.
type Runner struct {
	log    *zap.Logger
	reaper *Reaper
	pid    int
	grace  time.Duration

	sigs     chan os.Signal
	stopReq  chan struct{}
	exitCh   <-chan Exit
	done     chan struct{}
	exit     Exit // written once before done is closed
	quit     chan struct{}
	loopDone chan struct{}

	closeOnce sync.Once
}

// Start makes the process a reaper (see NewReaper), subscribes to the
// forwarded signals and starts the workload in its own process group. When
// ctx ends, the workload is stopped as by Stop. Call Close when done.
func Start(ctx context.Context, cfg Config) (*Runner, error) {
	if len(cfg.Argv) == 0 {
		return nil, errors.New("start workload: no command given")
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	grace := cfg.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	reaper, err := NewReaper(ReaperConfig{Logger: log, OutputDrain: cfg.OutputDrain})
	if err != nil {
		return nil, fmt.Errorf("start workload %s: %w", cfg.Argv[0], err)
	}

	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Env, cmd.Dir = cfg.Env, cfg.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	cmd.SysProcAttr = procAttr(cfg)

	// Subscribe before the start: a signal arriving meanwhile is queued
	// and forwarded once the workload runs.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	exitCh, err := reaper.Start(cmd)
	if err != nil {
		signal.Stop(sigs)
		reaper.Close()
		return nil, fmt.Errorf("start workload: %w", err)
	}
	r := &Runner{
		log:      log,
		reaper:   reaper,
		pid:      cmd.Process.Pid,
		grace:    grace,
		sigs:     sigs,
		stopReq:  make(chan struct{}, 1),
		exitCh:   exitCh,
		done:     make(chan struct{}),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	log.Info("workload started", zap.String("path", cmd.Path), zap.Int("pid", r.pid))
	go r.loop(ctx)
	return r, nil
}

// procAttr puts the workload in its own process group, in the terminal's
// foreground when its stdin is the supervisor's controlling terminal, and
// sets its credentials.
func procAttr(cfg Config) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if f, ok := cfg.Stdin.(*os.File); ok && isControllingTerminal(f) {
		attr.Setpgid, attr.Foreground, attr.Ctty = false, true, int(f.Fd())
	}
	if cfg.UID != nil || cfg.GID != nil {
		cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
		if cfg.UID != nil {
			cred.Uid = *cfg.UID
		}
		if cfg.GID != nil {
			cred.Gid = *cfg.GID
		}
		cred.Groups = cfg.Groups
		attr.Credential = cred
	}
	return attr
}

// isControllingTerminal reports whether f is this process's controlling
// terminal: tcgetpgrp fails with ENOTTY for any other file.
func isControllingTerminal(f *os.File) bool {
	_, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil
}

// Pid is the workload's process id (and process group id).
func (r *Runner) Pid() int { return r.pid }

// Reaper is the process's reaper; start exec requests' commands with its
// Start so that their statuses are not taken by the reaper.
func (r *Runner) Reaper() *Reaper { return r.reaper }

// Done is closed when the workload has exited.
func (r *Runner) Done() <-chan struct{} { return r.done }

// Wait blocks until the workload has exited and returns how.
func (r *Runner) Wait() Exit {
	<-r.done
	return r.exit
}

// Signal sends sig to the workload's process group. It returns
// os.ErrProcessDone once the workload has exited.
func (r *Runner) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal workload: unsupported signal %v", sig)
	}
	select {
	case <-r.done:
		return os.ErrProcessDone
	default:
	}
	return r.reaper.Kill(r.pid, s)
}

// Stop sends SIGTERM to the workload, SIGKILL after the grace period, and
// returns once it has exited.
func (r *Runner) Stop() {
	select {
	case r.stopReq <- struct{}{}:
	default: // a request is pending already
	}
	<-r.done
}

// Close stops the workload if it still runs (as Stop), then stops signal
// forwarding and the Reaper. Signals the supervisor receives afterwards
// have their default effect.
func (r *Runner) Close() {
	r.closeOnce.Do(func() {
		r.Stop()
		close(r.quit)
		<-r.loopDone
		signal.Stop(r.sigs)
		r.reaper.Close()
	})
}

// loop forwards signals, runs the grace timer and records the exit; it is
// the only goroutine that decides to terminate or kill the workload.
func (r *Runner) loop(ctx context.Context) {
	defer close(r.loopDone)
	var (
		grace   *time.Timer
		kill    <-chan time.Time
		ctxDone = ctx.Done()
		exitCh  = r.exitCh
	)
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	exited := func() bool {
		select {
		case <-r.done:
			return true
		default:
			return false
		}
	}
	terminate := func(why string) {
		if exited() {
			return
		}
		r.log.Info("stopping workload", zap.String("reason", why), zap.Duration("grace", r.grace))
		r.forward(unix.SIGTERM)
		if grace == nil {
			grace = time.NewTimer(r.grace)
			kill = grace.C
		}
	}
	for {
		select {
		case sig := <-r.sigs:
			if sig == unix.SIGTERM {
				terminate("SIGTERM received")
			} else if !exited() {
				r.forward(sig.(syscall.Signal))
			}
		case <-r.stopReq:
			terminate("stop requested")
		case <-ctxDone:
			ctxDone = nil
			terminate("context ended")
		case <-kill:
			kill = nil
			if !exited() {
				r.log.Warn("workload outlived its grace period, killing it", zap.Duration("grace", r.grace))
				r.forward(unix.SIGKILL)
			}
		case e := <-exitCh:
			exitCh = nil
			r.exit = e
			close(r.done)
			r.log.Info("workload exited", zap.Int("pid", r.pid), zap.Stringer("exit", e))
		case <-r.quit:
			return
		}
	}
}

func (r *Runner) forward(sig syscall.Signal) {
	err := r.reaper.Kill(r.pid, sig)
	switch {
	case errors.Is(err, os.ErrProcessDone):
	case err != nil:
		r.log.Warn("forward signal to workload", zap.Stringer("signal", sig), zap.Error(err))
	default:
		r.log.Debug("forwarded signal to workload", zap.Stringer("signal", sig))
	}
}
