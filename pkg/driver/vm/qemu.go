package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/vmfs"
)

const (
	// maxSocketPath is the longest unix socket path Linux binds.
	maxSocketPath = 107
	// qemuReadyWait bounds the wait for QEMU to create its stop port's
	// socket, which it does once its arguments are parsed.
	qemuReadyWait = 10 * time.Second
	// qemuSettle is how long QEMU must stay up after that to count as
	// started: its devices (the virtio-fs connection among them) are set
	// up by then, and a bad setting has made it exit.
	qemuSettle = 200 * time.Millisecond
	// stopRepeat is how often Stop writes the stop request to the guest's
	// stop port: a request that arrives before the guest opened the port
	// is dropped when it does.
	stopRepeat = 500 * time.Millisecond
)

// cmdSafe matches paths that may go into QEMU's guest forward command,
// which libslirp splits like a shell and socat parses as an address
// (where ',' ':' and '!' mean something).
var cmdSafe = regexp.MustCompile(`^[A-Za-z0-9/_.+-]+$`)

// startQEMU boots the spec's VM under QEMU: virtiofsd first (QEMU connects
// to it at start), then QEMU, each in a session of its own.
func (d *Driver) startQEMU(spec driver.Spec) error {
	id, dir := spec.SandboxID, spec.StateDir
	img, err := d.image(spec)
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	extra, err := os.ReadFile(filepath.Join(img, "cmdline"))
	if err != nil {
		return fmt.Errorf("start sandbox %s: guest image: %w", id, err)
	}
	gwSock := filepath.Join(spec.SocketDir, guest.SocketName)
	if err := checkPaths(dir, gwSock); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	boot := guest.Boot{
		Env:      guestEnv(spec, QEMUGateway, nil),
		Args:     supervisorArgs(spec),
		StopPort: stopPort,
	}
	if err := writeInitrd(filepath.Join(dir, initrdFile), filepath.Join(img, "initrd.gz"), boot); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	// The console log holds this start; the one before is kept beside it.
	if err := os.Rename(filepath.Join(dir, consoleLog), filepath.Join(dir, consoleLogPrev)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}

	fsLog, err := openLog(filepath.Join(dir, virtiofsdLog))
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	defer fsLog.Close()
	fsPID, err := vmfs.Virtiofsd{Binary: d.cfg.Virtiofsd, Dir: spec.TokenDir, Socket: filepath.Join(dir, fsSocket), Log: fsLog}.Start()
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	fsProc, err := hostproc.Identify(fsPID)
	if err != nil {
		killChild(fsPID)
		return fmt.Errorf("start sandbox %s: virtiofsd: %w", id, err)
	}
	d.reaper.Add(fsProc, nil)

	vmm, err := d.launchQEMU(spec, img, string(extra), gwSock)
	if err != nil {
		fsProc.KillSession(killWait)
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	rec := vmRecord{Backend: BackendQEMU, InstanceID: spec.InstanceID, StartedAt: d.now(), VMM: vmm, Virtiofsd: fsProc, Accel: d.accel}
	if err := statedir.WriteJSON(filepath.Join(dir, vmFile), rec); err != nil {
		// Untracked by any file, the VM could never be stopped: end it.
		vmm.KillSession(killWait)
		fsProc.KillSession(killWait)
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	d.log.Info("sandbox started", zap.String("sandbox_id", id), zap.String("instance_id", spec.InstanceID),
		zap.String("backend", BackendQEMU), zap.String("accel", d.accel), zap.Int("qemu_pid", vmm.PID),
		zap.Int("virtiofsd_pid", fsProc.PID), zap.String("console", filepath.Join(dir, consoleLog)))
	return nil
}

// launchQEMU starts QEMU and waits until it runs its machine.
func (d *Driver) launchQEMU(spec driver.Spec, img, extraCmdline, gwSock string) (hostproc.Process, error) {
	dir := spec.StateDir
	out, err := openLog(filepath.Join(dir, vmmLog))
	if err != nil {
		return hostproc.Process{}, err
	}
	defer out.Close()
	ctl := filepath.Join(dir, ctlSocket)
	os.Remove(ctl)
	cmd := exec.Command(d.cfg.QEMU, d.qemuArgs(spec, img, extraCmdline, gwSock)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	// A session of its own: it outlives the gateway, and holds the socat
	// bridges QEMU starts, which Stop kills with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return hostproc.Process{}, fmt.Errorf("run %s: %w", d.cfg.QEMU, err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	p, err := hostproc.Identify(pid)
	if err != nil {
		killChild(pid)
		return hostproc.Process{}, fmt.Errorf("qemu: %w", err)
	}
	done := d.reaper.Add(p, nil)
	if err := waitQEMUReady(ctl, done); err != nil {
		p.KillSession(killWait)
		return hostproc.Process{}, fmt.Errorf("qemu (pid %d): %w; its output is in %s", pid, err, out.Name())
	}
	return p, nil
}

// waitQEMUReady waits for QEMU's stop port socket, then qemuSettle, and
// fails if QEMU exits meanwhile.
func waitQEMUReady(ctl string, exited <-chan struct{}) error {
	deadline := time.After(qemuReadyWait)
	for {
		if fi, err := os.Stat(ctl); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case <-exited:
			return errors.New("exited at start")
		case <-deadline:
			return fmt.Errorf("created no %s within %s", ctl, qemuReadyWait)
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case <-exited:
		return errors.New("exited at start")
	case <-time.After(qemuSettle):
		return nil
	}
}

// qemuArgs is QEMU's command line for spec (TESTING.md records the
// machine setup measured to work: the pc machine, memfd-backed shared
// memory for vhost-user, virtio-fs and virtio-net over PCI).
func (d *Driver) qemuArgs(spec driver.Spec, img, extraCmdline, gwSock string) []string {
	dir := spec.StateDir
	mem := strconv.Itoa(d.cfg.MemoryMiB)
	cmdline := strings.Join(append([]string{"console=ttyS0", "quiet", "panic=-1"},
		append(strings.Fields(extraCmdline), guest.KernelParam(guest.VMShareTag, ShareTag), guest.KernelParam(guest.VMAddress, guestAddress))...), " ")
	bridge := fmt.Sprintf("%s -lf %s - UNIX-CONNECT:%s", d.cfg.Socat, filepath.Join(dir, socatLog), gwSock)
	args := []string{
		"-name", "sandkey-" + optValue(spec.SandboxID),
		"-machine", "pc,accel=" + d.accel,
		"-m", mem, "-smp", strconv.Itoa(d.cfg.CPUs),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-monitor", "none",
		// ttyS0: the console, to a file; ttyS1: the stop port.
		"-chardev", "file,id=console,path=" + optValue(filepath.Join(dir, consoleLog)),
		"-serial", "chardev:console",
		"-chardev", "socket,id=ctl,path=" + optValue(filepath.Join(dir, ctlSocket)) + ",server=on,wait=off",
		"-serial", "chardev:ctl",
		"-kernel", filepath.Join(img, "vmlinuz"),
		"-initrd", filepath.Join(dir, initrdFile),
		"-append", cmdline,
		// vhost-user needs the guest's memory shared with virtiofsd.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + "M,share=on",
		"-numa", "node,memdev=mem",
		"-chardev", "socket,id=fs,path=" + optValue(filepath.Join(dir, fsSocket)),
		"-device", "vhost-user-fs-pci,chardev=fs,tag=" + ShareTag,
		// Restricted: the guest reaches nothing but the one forward, a
		// socat per connection to the sandbox's attested socket.
		"-netdev", "user,id=net,restrict=on,guestfwd=tcp:10.0.2.100:" + strconv.Itoa(gatewayPort) + "-cmd:" + optValue(bridge),
		"-device", "virtio-net-pci,netdev=net",
	}
	if d.accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	return args
}

// optValue escapes a value inside a QEMU option list, where ',' separates
// options and ",," is a comma.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// checkPaths refuses paths QEMU's setup cannot use: sockets over the
// kernel's length limit, and paths the guest forward's command cannot
// carry.
func checkPaths(stateDir, gwSock string) error {
	for _, s := range []string{filepath.Join(stateDir, fsSocket), filepath.Join(stateDir, ctlSocket), gwSock} {
		if len(s) > maxSocketPath {
			return fmt.Errorf("socket path %s is %d bytes, over the %d-byte limit of unix sockets: use a shorter state directory", s, len(s), maxSocketPath)
		}
	}
	for _, s := range []string{filepath.Join(stateDir, socatLog), gwSock} {
		if !cmdSafe.MatchString(s) {
			return fmt.Errorf("path %q: the guest forward's command takes only letters, digits and / _ . + - in paths", s)
		}
	}
	return nil
}

// requestStop asks the guest to stop through its stop port, again every
// stopRepeat until the returned function is called.
func (d *Driver) requestStop(dir string, rec vmRecord) func() {
	if rec.Backend == BackendKrun {
		// libkrun's VMM ends its VM on SIGTERM; there is no stop port.
		rec.VMM.Signal(unix.SIGTERM)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if err := writeStopRequest(filepath.Join(dir, ctlSocket)); err != nil {
				d.log.Debug("stop request", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(stopRepeat):
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// writeStopRequest writes one stop request to QEMU's end of the stop port.
func writeStopRequest(ctl string) error {
	conn, err := net.DialTimeout("unix", ctl, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = conn.Write([]byte(guest.StopRequest + "\n"))
	return err
}

// kvmUsable reports whether /dev/kvm opens and creates a VM. (Where
// nested virtualisation is broken, it may do so and still hang: choose
// AccelTCG there.)
func kvmUsable() bool {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	const (
		kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
		kvmCreateVM      = 0xAE01 // _IO(KVMIO, 0x01)
		kvmAPIVersion    = 12
	)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 || v != kvmAPIVersion {
		return false
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return false
	}
	unix.Close(int(vm))
	return true
}

// openLog opens a log file for appending, 0600.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// killChild kills and reaps a child that could not be tracked.
func killChild(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
}
