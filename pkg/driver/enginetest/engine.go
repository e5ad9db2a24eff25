package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"
)

// APIVersion is the Engine API version the harness speaks, the one the
// drivers pin.
const APIVersion = "1.41"

const (
	// readyTimeout bounds the wait for a launched engine to answer a ping;
	// measured: dockerd about 250 ms, podman about 55 ms.
	readyTimeout = 60 * time.Second
	// readyPoll is how often a launch pings the engine.
	readyPoll = 10 * time.Millisecond
	// stopTimeout bounds the wait for the engine to end after SIGTERM, and
	// again after SIGKILL.
	stopTimeout = 20 * time.Second
	// cleanTimeout bounds the removal of the engine's containers at Stop.
	cleanTimeout = 60 * time.Second
)

// Engine is a private container engine started for a test run.
type Engine struct {
	// Kind is "docker" or "podman".
	Kind string
	// Socket is the path of the engine's API socket; the address for a
	// client is "unix://" + Socket (see Host).
	Socket string

	dir  string    // the private directory holding everything of the engine
	log  string    // the engine's stdout and stderr
	cmd  *exec.Cmd // the engine process
	done chan struct{}
	wait error // cmd.Wait's result, set before done is closed
}

// MissingError says that an engine's binary is not installed.
type MissingError struct {
	Binary  string // the program looked up on PATH
	Package string // the Debian package that ships it
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found on PATH: install the Debian package %s (scripts/engine-deps.sh installs every engine)",
		e.Binary, e.Package)
}

// Host is the engine's API address for a client.
func (e *Engine) Host() string { return "unix://" + e.Socket }

// Dir is the engine's private directory.
func (e *Engine) Dir() string { return e.dir }

// LaunchDocker starts a private dockerd and waits until it is ready. The
// error is a *MissingError when dockerd is not installed.
func LaunchDocker() (*Engine, error) {
	bin, err := lookPath("dockerd", "docker.io")
	if err != nil {
		return nil, err
	}
	if _, err := lookPath("runc", "runc"); err != nil {
		return nil, err
	}
	dir, err := privateDir("skd")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "docker.sock")
	cmd := exec.Command(bin,
		"--host", "unix://"+sock,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--storage-driver", "overlay2",
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--iptables=false", "--ip-masq=false", "--bridge=none",
	)
	cmd.Env = os.Environ()
	return launch("docker", dir, sock, cmd)
}

// podmanConf is the containers.conf a private podman gets through
// CONTAINERS_CONF (it replaces the system's), as shared/TESTING.md
// measured it: crun fails on these machines' hybrid cgroups and raising
// rlimits is not permitted. One line is added: file locks, which live in
// the service's tmp dir. The default shm locks share one segment
// (/libpod_lock) among every root podman of the host, and a podman that
// starts on a fresh run root frees all of its locks, those of another
// private podman running in parallel included.
const podmanConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
`

// registriesConf lists no registry to search: a short image name never
// resolves to a remote one.
const registriesConf = `unqualified-search-registries = []
`

// LaunchPodman starts a private `podman system service` and waits until
// it is ready. The error is a *MissingError when podman or runc is not
// installed.
func LaunchPodman() (*Engine, error) {
	bin, err := lookPath("podman", "podman")
	if err != nil {
		return nil, err
	}
	if _, err := lookPath("runc", "runc"); err != nil {
		return nil, err
	}
	dir, err := privateDir("skp")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "containers.conf")
	registries := filepath.Join(dir, "registries.conf")
	for path, content := range map[string]string{conf: podmanConf, registries: registriesConf} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("launch podman: %w", err)
		}
	}
	sock := filepath.Join(dir, "podman.sock")
	cmd := exec.Command(bin,
		"--root", filepath.Join(dir, "root"),
		"--runroot", filepath.Join(dir, "run"),
		"--tmpdir", filepath.Join(dir, "tmp"),
		"--volumepath", filepath.Join(dir, "volumes"),
		"--network-config-dir", filepath.Join(dir, "net"),
		"system", "service", "--time=0", "unix://"+sock,
	)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_REGISTRIES_CONF="+registries)
	return launch("podman", dir, sock, cmd)
}

// lookPath finds binary on PATH, or returns a *MissingError naming pkg.
func lookPath(binary, pkg string) (string, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return "", &MissingError{Binary: binary, Package: pkg}
	}
	return path, nil
}

// privateDir makes a short private directory under the system temp dir.
func privateDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("make engine directory: %w", err)
	}
	return dir, nil
}

// launch starts cmd, the engine of kind, with its output in dir, and waits
// until it answers on sock. On failure it stops the engine and removes dir.
func launch(kind, dir, sock string, cmd *exec.Cmd) (*Engine, error) {
	e := &Engine{Kind: kind, Socket: sock, dir: dir, log: filepath.Join(dir, kind+".log"), cmd: cmd, done: make(chan struct{})}
	out, err := os.Create(e.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("launch %s: %w", kind, err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own keeps a terminal's ^C from the engine, so
	// that Stop, not the signal, ends it. SIGTERM if this process dies
	// first, so that the engine does not outlive the test run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("launch %s: %w", kind, err)
	}
	go func() {
		e.wait = cmd.Wait()
		close(e.done)
	}()
	if err := e.waitReady(); err != nil {
		return nil, errors.Join(fmt.Errorf("launch %s: %w\n%s", kind, err, e.logTail()), e.Stop())
	}
	return e, nil
}

// waitReady pings the engine until it answers, it exits, or readyTimeout
// passes.
func (e *Engine) waitReady() error {
	c, err := e.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-e.done:
			return fmt.Errorf("%s exited before it was ready: %v", e.Kind, e.wait)
		case <-time.After(readyPoll):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", e.Kind, readyTimeout, err)
		}
	}
}

// Client returns a client of the engine pinned to APIVersion; the caller
// closes it.
func (e *Engine) Client() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.WithHost(e.Host()), client.WithVersion(APIVersion))
	if err != nil {
		return nil, fmt.Errorf("client of %s at %s: %w", e.Kind, e.Socket, err)
	}
	return c, nil
}

// logTail is the end of the engine's output, for error messages.
func (e *Engine) logTail() string {
	data, err := os.ReadFile(e.log)
	if err != nil {
		return ""
	}
	const keep = 4000
	if len(data) > keep {
		data = data[len(data)-keep:]
	}
	return fmt.Sprintf("--- end of %s ---\n%s", e.log, data)
}

// Stop removes the engine's containers, ends the engine by its pid
// (SIGTERM, then SIGKILL), kills what it left behind, unmounts what is
// mounted below its directory and removes the directory. It returns every
// problem it met but always goes on to the next step.
func (e *Engine) Stop() error {
	var errs []error
	select {
	case <-e.done:
	default:
		errs = append(errs, e.removeContainers())
		errs = append(errs, e.end())
	}
	errs = append(errs, KillLeftovers(e.dir), UnmountBelow(e.dir))
	if err := os.RemoveAll(e.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s directory: %w", e.Kind, err))
	}
	return errors.Join(errs...)
}

// removeContainers force-removes every container of the engine.
func (e *Engine) removeContainers() error {
	c, err := e.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cleanTimeout)
	defer cancel()
	cs, err := c.ContainerList(ctx, ctr.ListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list %s containers: %w", e.Kind, err)
	}
	var errs []error
	for _, ct := range cs {
		if ct.State == ctr.StateRunning {
			c.ContainerKill(ctx, ct.ID, "SIGKILL") // best effort; remove reports
		}
		if err := c.ContainerRemove(ctx, ct.ID, ctr.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			errs = append(errs, fmt.Errorf("remove %s container %s: %w", e.Kind, ct.ID, err))
		}
	}
	return errors.Join(errs...)
}

// end sends SIGTERM to the engine, and SIGKILL when it outlives
// stopTimeout.
func (e *Engine) end() error {
	pid := e.cmd.Process.Pid
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop %s pid %d: %w", e.Kind, pid, err)
	}
	select {
	case <-e.done:
		return nil
	case <-time.After(stopTimeout):
	}
	unix.Kill(pid, unix.SIGKILL)
	select {
	case <-e.done:
		return fmt.Errorf("%s pid %d ignored SIGTERM for %s; killed", e.Kind, pid, stopTimeout)
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s pid %d still runs %s after SIGKILL", e.Kind, pid, stopTimeout)
	}
}

// KillLeftovers sends SIGKILL, by pid, to every process whose command line
// names dir: only the processes of an engine (or cluster, see kubetest)
// whose private directory dir is can. It waits until they are gone.
func KillLeftovers(dir string) error {
	return KillUntilGone("processes naming "+dir, func() []int { return ProcessesNaming(dir) })
}

// KillUntilGone sends SIGKILL, by pid, to every process list returns, and
// again, until list returns none or stopTimeout passes; what names the
// processes for the error.
func KillUntilGone(what string, list func() []int) error {
	deadline := time.Now().Add(stopTimeout)
	for {
		pids := list()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still run after SIGKILL: %v", what, pids)
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcessesNaming lists the live processes (zombies excluded) whose
// command line names a path below dir, this process excepted.
func ProcessesNaming(dir string) []int {
	below := []byte(dir + "/")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, below) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// UnmountBelow detaches every mount at or below dir, deepest first.
func UnmountBelow(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
