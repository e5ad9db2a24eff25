package vminit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// BootFile is where a VM driver puts the sandbox's Boot in the guest's
// root file system (an archive it appends to the image's initramfs).
const BootFile = "/etc/sandkey/boot.json"

// StopRequest is the line a VM driver writes to the guest's stop port to
// ask for a graceful stop.
const StopRequest = "stop"

// ExitMarker starts the line Halt writes to the console before it powers
// the VM off: ExitMarker followed by the supervisor's exit code.
const ExitMarker = "sandkey-vm-exit-code="

// maxBootFile caps the boot file's size: it holds an environment and a
// command line, never anything large.
const maxBootFile = 1 << 20

// Boot is what a VM's driver tells the guest's init beyond the kernel
// command line: the supervisor's environment and arguments, which the
// kernel command line cannot carry well (it is visible in the host's
// process list, holds 2 KiB, and has no escape for quotes).
type Boot struct {
	// Env holds KEY=VALUE entries added to the supervisor's environment
	// before its flags are parsed (the SANDKEY_* variables and the
	// workload's own).
	Env []string `json:"env"`
	// Args are the supervisor's arguments when it was started without
	// any: [flags...] -- command args...
	Args []string `json:"args"`
	// StopPort is a serial device on which a line "stop" asks the
	// supervisor to stop as on SIGTERM; empty for none.
	StopPort string `json:"stop_port,omitempty"`
}

// Encode returns b as the boot file's contents, after checking every
// environment entry.
func (b Boot) Encode() ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	return json.Marshal(b)
}

func (b Boot) check() error {
	for _, kv := range b.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("boot environment entry %q: want NAME=VALUE without NUL bytes", kv)
		}
	}
	return nil
}

// ReadBoot reads and checks a boot file. A missing file yields an error
// matching fs.ErrNotExist.
func ReadBoot(path string) (Boot, error) {
	f, err := os.Open(path)
	if err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	defer f.Close()
	var b Boot
	dec := json.NewDecoder(&limitedReader{f: f, left: maxBootFile})
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	if err := b.check(); err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	return b, nil
}

type limitedReader struct {
	f    *os.File
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxBootFile)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

// Guest is a VM init's boot: what StartGuest set up, to be ended with
// Finish once the supervisor is done.
type Guest struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartGuest prepares the supervisor's run as a VM's init, before its
// flags are parsed. It reads bootFile (BootFile in a guest); when there is
// none (a VM booted by hand) it returns args unchanged. Otherwise it adds the boot file's
// environment to the process's, returns its arguments when args is
// empty, and watches its stop port, sending this process SIGTERM once a
// stop is requested (again every stopRepeat, because a SIGTERM that
// arrives before the supervisor handles it is dropped: init ignores
// signals it has no handler for).
func StartGuest(bootFile string, args []string) ([]string, *Guest, error) {
	g := &Guest{cancel: func() {}}
	b, err := ReadBoot(bootFile)
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
// after a StopRequest line it calls stop, and again every stopRepeat.
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
			if strings.TrimSpace(s.Text()) == StopRequest {
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

// Halt ends a VM whose init is done: it writes ExitMarker and code to
// standard error (the console), flushes the file systems and powers the
// machine off. It returns only if that fails, after which the caller
// should exit (and the kernel, its init gone, panics and reboots).
func Halt(code int) error {
	fmt.Fprintf(os.Stderr, "%s%d\n", ExitMarker, code)
	return PowerOff()
}

// EnvPrefix starts the environment variables that carry Setup's settings
// where the kernel command line cannot (libkrun boots its own kernel with
// its own command line): SANDKEY_VM_TAG=auth is the parameter
// sandkey.tag=auth.
const EnvPrefix = "SANDKEY_VM_"

// EnvParams returns the settings of environ (KEY=VALUE entries) named
// EnvPrefix<KEY>, keyed like ParseKernelCmdline's result: lower case, '-'
// as '_'. SANDKEY_VM_INIT, the supervisor's own switch, is not a setting.
func EnvParams(environ []string) map[string]string {
	params := make(map[string]string)
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		key, isParam := strings.CutPrefix(name, EnvPrefix)
		if !ok || !isParam || key == "" || key == "INIT" {
			continue
		}
		params[strings.ReplaceAll(strings.ToLower(key), "-", "_")] = value
	}
	return params
}
