package vminit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSetupInitialisesFreshNamespaces runs Setup as PID 1 of new PID, mount
// and network namespaces in which /proc, /sys, /dev and /run have been
// unmounted and the only interfaces are a down lo and a tap device named
// eth0: as close to a VM's first instant as a test gets without a VM.
func TestSetupInitialisesFreshNamespaces(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun for a stand-in eth0: %v", err)
	}
	cmd := helperCommand(t, "setup")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var report map[string]string
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("helper report %q: %v\nstderr:\n%s", stdout.String(), err, stderr.String())
	}
	checks := []struct{ name, what string }{
		{"bad config refused, nothing changed", "Setup with a bad address fails before mounting anything"},
		{"needs init before", "NeedsInit is true as PID 1 without /proc"},
		{"setup", "Setup succeeds"},
		{"needs init after", "NeedsInit is false once /proc is mounted"},
		{"mount /proc", "proc on /proc"},
		{"mount /sys", "sysfs on /sys"},
		{"mount /dev", "devtmpfs on /dev"},
		{"mount /run", "tmpfs on /run"},
		{"lo up", "a UDP datagram to 127.0.0.1 comes back"},
		{"eth0 address", "10.0.2.15 is a local address"},
		{"eth0 network route", "10.0.2.0/24 routed on eth0"},
		{"default route", "default via 10.0.2.2 on eth0"},
		{"setup again", "a second Setup succeeds and mounts nothing twice"},
		{"share error names tag", "a missing virtio-fs share fails naming tag and mount point"},
	}
	for _, c := range checks {
		got, ok := report[c.name]
		switch {
		case !ok:
			t.Errorf("%s (%s): not checked", c.name, c.what)
		case got != "ok":
			t.Errorf("%s (%s): %s", c.name, c.what, got)
		}
	}
	if t.Failed() {
		t.Logf("helper stderr:\n%s", stderr.String())
	}
}

func TestPowerOffEndsPIDNamespace(t *testing.T) {
	requireRoot(t)
	pidns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	cmd := helperCommand(t, "poweroff")
	cmd.Env = append(cmd.Env, "SANDKEY_VMINIT_PARENT_PIDNS="+pidns)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// reboot(POWER_OFF) from the init of a child PID namespace kills it,
	// and its parent sees SIGINT (RESTART would give SIGHUP).
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v, want killed by SIGINT; output:\n%s", err, out.String())
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Fatalf("helper ended with %v, want killed by SIGINT; output:\n%s", ee, out.String())
	}
}

func helperCommand(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// helperPowerOff powers off, but only as the init of a PID namespace that
// is not the test's: anywhere else it would power off the machine.
func helperPowerOff() int {
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil || os.Getpid() != 1 || self == os.Getenv("SANDKEY_VMINIT_PARENT_PIDNS") || os.Getenv("SANDKEY_VMINIT_PARENT_PIDNS") == "" {
		fmt.Fprintf(os.Stderr, "refusing to power off: pid %d, pid namespace %s (%v)\n", os.Getpid(), self, err)
		return 90
	}
	err = PowerOff()
	fmt.Fprintln(os.Stderr, "PowerOff returned:", err)
	return 91
}

// helperSetup prepares a bare namespace, runs Setup and reports each check
// as "ok" or what went wrong, as JSON on stdout.
func helperSetup() int {
	report := map[string]string{}
	check := func(name string, err error) {
		if err != nil {
			report[name] = err.Error()
		} else {
			report[name] = "ok"
		}
	}
	defer func() { json.NewEncoder(os.Stdout).Encode(report) }()

	tap, err := bareNamespace()
	if err != nil {
		check("prepare", err)
		return 1
	}
	defer tap.Close()

	err = Setup(Config{Address: "10.0.2.15"}, nil)
	if err == nil {
		check("bad config refused, nothing changed", errors.New("Setup accepted address 10.0.2.15 without prefix"))
	} else if m, _ := isMountPoint("/proc"); m {
		check("bad config refused, nothing changed", fmt.Errorf("Setup failed (%v) but mounted /proc", err))
	} else {
		check("bad config refused, nothing changed", nil)
	}

	check("needs init before", expect(NeedsInit(), "NeedsInit() = false"))
	cfg := Config{Address: "10.0.2.15/24", Gateway: "10.0.2.2"}
	if err := Setup(cfg, nil); err != nil {
		check("setup", err)
		return 1
	}
	check("setup", nil)
	check("needs init after", expect(!NeedsInit(), "NeedsInit() = true"))

	mounts, err := mountTypes()
	if err != nil {
		check("mountinfo", err)
		return 1
	}
	for target, fstype := range map[string]string{"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts", "/run": "tmpfs"} {
		got := mounts[target]
		check("mount "+target, expect(len(got) == 1 && got[0] == fstype, fmt.Sprintf("mounts on %s: %v, want [%s]", target, got, fstype)))
	}
	check("lo up", udpEcho())
	check("eth0 address", bindUDP("10.0.2.15"))
	routes, err := os.ReadFile("/proc/net/route")
	if err != nil {
		check("routes", err)
		return 1
	}
	// /proc/net/route prints addresses as host-order hex of network-order
	// words: 10.0.2.0 is 0002000A on little-endian machines.
	hex := func(a, b, c, d byte) string {
		v := *(*uint32)(unsafe.Pointer(&[4]byte{a, b, c, d}))
		return fmt.Sprintf("%08X", v)
	}
	check("eth0 network route", hasRoute(string(routes), "eth0", hex(10, 0, 2, 0), hex(0, 0, 0, 0), hex(255, 255, 255, 0)))
	check("default route", hasRoute(string(routes), "eth0", hex(0, 0, 0, 0), hex(10, 0, 2, 2), hex(0, 0, 0, 0)))

	if err := Setup(cfg, nil); err != nil {
		check("setup again", err)
	} else if again, err := mountTypes(); err != nil {
		check("setup again", err)
	} else {
		var twice []string
		for _, target := range []string{"/proc", "/sys", "/dev", "/dev/pts", "/run"} {
			if len(again[target]) != 1 {
				twice = append(twice, fmt.Sprintf("%s: %v", target, again[target]))
			}
		}
		check("setup again", expect(len(twice) == 0, fmt.Sprintf("mounted again: %v", twice)))
	}

	err = Setup(Config{ShareTag: "sandkey-test-missing"}, nil)
	want := `mount virtio-fs share "sandkey-test-missing" on /run/sandkey/auth: `
	check("share error names tag", expect(err != nil && strings.HasPrefix(err.Error(), want), fmt.Sprintf("error %v, want one starting %q", err, want)))
	return 0
}

func expect(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

// bareNamespace makes this mount namespace private, creates the stand-in
// eth0 (a tap device, which needs no driver module) and unmounts /proc,
// /sys, /dev and /run, as they are before init runs.
func bareNamespace() (*os.File, error) {
	if os.Getpid() != 1 {
		return nil, fmt.Errorf("helper is pid %d, want 1", os.Getpid())
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	tap, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq("eth0")
	if err != nil {
		tap.Close()
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(int(tap.Fd()), unix.TUNSETIFF, ifr); err != nil {
		tap.Close()
		return nil, fmt.Errorf("create tap eth0: %w", err)
	}
	for _, target := range []string{"/run", "/dev", "/sys", "/proc"} {
		for {
			mounted, err := isMountPoint(target)
			if err != nil {
				tap.Close()
				return nil, err
			}
			if !mounted {
				break
			}
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				tap.Close()
				return nil, fmt.Errorf("unmount %s: %w", target, err)
			}
		}
	}
	return tap, nil
}

// mountTypes lists the file system types mounted on each mount point.
func mountTypes() (map[string][]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	types := map[string][]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 1 {
			continue
		}
		types[fields[4]] = append(types[fields[4]], after[0])
	}
	return types, s.Err()
}

// udpEcho sends a datagram to itself over loopback.
func udpEcho() error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.WriteTo([]byte("ping"), conn.LocalAddr()); err != nil {
		return err
	}
	buf := make([]byte, 8)
	n, _, err := conn.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		return fmt.Errorf("echo over lo: %q, %v", buf[:n], err)
	}
	return nil
}

// bindUDP fails with EADDRNOTAVAIL unless ip is a local address.
func bindUDP(ip string) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		return err
	}
	return conn.Close()
}

// hasRoute looks for a /proc/net/route line with these fields.
func hasRoute(table, iface, dst, gw, mask string) error {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[0] == iface && f[1] == dst && f[2] == gw && f[7] == mask {
			return nil
		}
	}
	return fmt.Errorf("no route %s dst %s gw %s mask %s in:\n%s", iface, dst, gw, mask, table)
}
