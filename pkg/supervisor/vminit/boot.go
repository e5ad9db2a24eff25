package vminit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/guest"
)

// Guest is a VM init's boot: what StartGuest set up, to be ended with
// Finish once the supervisor is done.
type Guest struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartGuest prepares the supervisor's run as a VM's init, before its
// flags are parsed. It reads bootFile (guest.BootFile in a VM); when there is
// none (a VM booted by hand) it returns args unchanged. Otherwise it adds the boot file's
// environment to the process's, returns its arguments when args is
// empty, and watches its stop port, sending this process SIGTERM once a
// stop is requested (again every stopRepeat, because a SIGTERM that
// arrives before the supervisor handles it is dropped: init ignores
// signals it has no handler for).
func StartGuest(bootFile string, args []string) ([]string, *Guest, error) {
	g := &Guest{cancel: func() {}}
	b, err := guest.ReadBoot(bootFile)
	if errors.Is(err, fs.ErrNotExist) {
		return args, g, nil
	}
	if err != nil {
		return args, g, err
	}
	for _, kv := range b.Env {
		name, value, _ := strings.Cut(kv, "=")
		if err := os.Setenv(name, value); err != nil {
			return args, g, fmt.Errorf("boot environment %s: %w", name, err)
		}
	}
	if len(args) == 0 {
		args = b.Args
	}
	if b.StopPort != "" {
		ctx, cancel := context.WithCancel(context.Background())
		g.cancel = cancel
		g.wg.Go(func() {
			watchStopPort(ctx, b.StopPort, func() { unix.Kill(os.Getpid(), unix.SIGTERM) })
		})
	}
	return args, g, nil
}

// Finish stops the stop port's watcher.
func (g *Guest) Finish() {
	g.cancel()
	g.wg.Wait()
}

// Timings of the stop port watcher.
const (
	// stopPortRetry is how often the watcher tries to open the port, which
	// appears once Setup has mounted /dev.
	stopPortRetry = 50 * time.Millisecond
	// stopRepeat is how often a requested stop is signalled again until
	// the process ends.
	stopRepeat = 500 * time.Millisecond
)

// watchStopPort reads lines from the serial device dev until ctx ends;
// after a guest.StopRequest line it calls stop, and again every stopRepeat.
func watchStopPort(ctx context.Context, dev string, stop func()) {
	f := openStopPort(ctx, dev)
	if f == nil {
		return
	}
	requested := make(chan struct{})
	go func() {
		// Closing f ends this reader; ctx's end closes f below.
		defer close(requested)
		s := bufio.NewScanner(f)
		for s.Scan() {
			if strings.TrimSpace(s.Text()) == guest.StopRequest {
				return
			}
		}
		// The port closed or failed: no stop request will come.
		<-ctx.Done()
	}()
	select {
	case <-ctx.Done():
		f.Close()
		<-requested
		return
	case <-requested:
	}
	defer f.Close()
	t := time.NewTicker(stopRepeat)
	defer t.Stop()
	for {
		stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// openStopPort opens dev once it exists, in raw mode without echo, so that
// nothing is written back to the host; nil when ctx ends first.
func openStopPort(ctx context.Context, dev string) *os.File {
	for {
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
		if err == nil {
			// Not f.Fd(), which would make reads block where Close cannot
			// end them.
			if rc, err := f.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil {
						t.Lflag &^= unix.ECHO | unix.ECHONL
						t.Oflag &^= unix.OPOST
						unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
					}
				})
			}
			return f
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(stopPortRetry):
		}
	}
}

// Halt ends a VM whose init is done: it writes guest.ExitMarker and code to
// standard error (the console), flushes the file systems and powers the
// machine off. It returns only if that fails, after which the caller
// should exit (and the kernel, its init gone, panics and reboots).
func Halt(code int) error {
	fmt.Fprintf(os.Stderr, "%s%d\n", guest.ExitMarker, code)
	return PowerOff()
}

// EnvParams returns the settings of environ (KEY=VALUE entries) named
// guest.EnvVMPrefix<KEY>, keyed like ParseKernelCmdline's result: lower
// case, '-' as '_'. guest.EnvVMInit, the supervisor's own switch, is not a
// setting.
func EnvParams(environ []string) map[string]string {
	params := make(map[string]string)
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		key, isParam := strings.CutPrefix(name, guest.EnvVMPrefix)
		if !ok || !isParam || key == "" || name == guest.EnvVMInit {
			continue
		}
		params[strings.ReplaceAll(strings.ToLower(key), "-", "_")] = value
	}
	return params
}
