package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stopTimeout bounds the wait for a component to end after SIGTERM, and
// again after SIGKILL.
const stopTimeout = 20 * time.Second

// process is one component of the cluster (etcd, the API server,
// containerd, the kubelet), started by the harness and ended by its pid.
type process struct {
	name string
	log  string // the component's stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	wait error // cmd.Wait's result, set before done is closed
}

// startProcess starts bin with args as the component name, its output
// appended to logPath.
func startProcess(name, logPath, bin string, args ...string) (*process, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own keeps a terminal's ^C from the component,
	// so that the teardown, in its order, ends it. SIGKILL if the test
	// binary dies first (its timeout): SIGTERM could leave an API server
	// hanging in its graceful shutdown once etcd is gone, and nothing of
	// a dead run is worth a graceful end; the next run clears the rest.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.wait = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.wait
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits; after stopTimeout it sends SIGKILL. A
// process that needed SIGKILL is reported.
func (p *process) stop() error {
	if p == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	if ended, _ := p.exited(); ended {
		return nil
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop %s pid %d: %w", p.name, pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	unix.Kill(pid, unix.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s pid %d ignored SIGTERM for %s; killed\n%s", p.name, pid, stopTimeout, logTail(p.log))
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s pid %d still runs %s after SIGKILL", p.name, pid, stopTimeout)
	}
}

// logTail is the end of a component's log, for error messages.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const keep = 4000
	if len(data) > keep {
		data = data[len(data)-keep:]
	}
	return fmt.Sprintf("--- end of %s ---\n%s", path, data)
}

// poll calls ready every interval until it returns true, the process ends
// or timeout passes; it returns the last error of ready with the log's
// tail.
func (p *process) poll(what string, timeout, interval time.Duration, ready func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := ready()
		if ok {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s: %v\n%s", p.name, what, p.wait, logTail(p.log))
		case <-time.After(interval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not %s after %s: %v\n%s", p.name, what, timeout, err, logTail(p.log))
		}
	}
}
