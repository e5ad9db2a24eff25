package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/testmain"
	"github.com/sandkey/sandkey/pkg/vmfs/krun"
	"github.com/sandkey/sandkey/pkg/vmfs/krun/kruntest"
)

// runnerEnv makes the test binary the libkrun runner, as `gateway
// vm-krun-run <vm.json>` is.
const runnerEnv = "VMDRIVER_TEST_KRUN_RUNNER"

func TestMain(m *testing.M) {
	if os.Getenv(runnerEnv) != "" {
		vm, err := krun.ReadVM(os.Args[len(os.Args)-1])
		if err == nil {
			err = krun.Run(vm)
		}
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(3)
	}
	goleak.VerifyTestMain(m)
}

func TestNewRefusesUnusableSettingsSayingWhatToDo(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no state root", Config{}, "no state root"},
		{"unknown backend", Config{StateRoot: root, Backend: "firecracker"}, `backend "firecracker"`},
		{"missing QEMU", Config{StateRoot: root, QEMU: "/nonexistent/qemu"}, "apt-get install qemu-system-x86"},
		{"missing socat", Config{StateRoot: root, QEMU: "/bin/true", Virtiofsd: "/bin/true", Socat: "/nonexistent/socat"}, "apt-get install socat"},
		{"unknown accelerator", Config{StateRoot: root, QEMU: "/bin/true", Virtiofsd: "/bin/true", Socat: "/bin/true", Accel: "hvf"}, `accelerator "hvf"`},
		{"too little memory", Config{StateRoot: root, MemoryMiB: 16}, "16 MiB"},
		{"libkrun without runner", Config{StateRoot: root, Backend: BackendKrun}, "no runner command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.cfg)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// newQEMUDriver is a QEMU driver whose programs are stand-ins that are
// never run: for the tests of its command lines.
func newQEMUDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(Config{StateRoot: t.TempDir(), QEMU: "/bin/true", Virtiofsd: "/bin/true", Socat: "/bin/true",
		Accel: AccelTCG, Image: "/img", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func testSpec(dir string) driver.Spec {
	return driver.Spec{
		SandboxID: "sbx-1", Name: "one", InstanceID: "i-1", Command: []string{"sleep", "600"},
		Env:        map[string]string{"FOO": "bar", "SANDKEY_GATEWAY": "tcp://evil:1", "sandkey_token_dir": "/elsewhere"},
		SandboxEnv: map[string]string{guest.EnvAuthMode: "dir", guest.EnvSandboxID: "sbx-1", guest.EnvInstanceID: "i-1"},
		TokenDir:   filepath.Join(dir, "auth"), SocketDir: filepath.Join(dir, "gw"), StateDir: filepath.Join(dir, "state"),
	}
}

func TestQEMUCommandLineIsolatesTheGuest(t *testing.T) {
	d := newQEMUDriver(t)
	spec := testSpec("/s,x")
	args := strings.Join(d.qemuArgs(spec, "/img", "sandkey.modules=/lib/modules/a.ko\n", "/s/gw/gw.sock"), " ")
	for _, want := range []string{
		"-machine pc,accel=tcg",
		"-nodefaults -no-user-config -display none -no-reboot -monitor none",
		// Commas in paths are doubled inside QEMU option lists.
		"-chardev file,id=console,path=/s,,x/state/console.log -serial chardev:console",
		"-chardev socket,id=ctl,path=/s,,x/state/ctl.sock,server=on,wait=off -serial chardev:ctl",
		"-kernel /img/vmlinuz -initrd /s,x/state/initrd.img",
		"-append console=ttyS0 quiet panic=-1 sandkey.modules=/lib/modules/a.ko sandkey.tag=sandkey-auth sandkey.addr=10.0.2.15/24 ",
		"-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem",
		"-chardev socket,id=fs,path=/s,,x/state/vfs.sock -device vhost-user-fs-pci,chardev=fs,tag=sandkey-auth",
		"-netdev user,id=net,restrict=on,guestfwd=tcp:10.0.2.100:1024-cmd:/bin/true -lf /s,,x/state/socat.log - UNIX-CONNECT:/s/gw/gw.sock",
		"-device virtio-net-pci,netdev=net",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU command line lacks %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "SANDKEY_") || strings.Contains(args, "FOO") {
		t.Errorf("the sandbox's environment is on QEMU's command line (the host's process list):\n%s", args)
	}
}

func TestCheckPathsRefusesSocketsTooLongAndPathsTheForwardCannotCarry(t *testing.T) {
	long := "/" + strings.Repeat("x", 100)
	for _, tc := range []struct{ stateDir, gwSock, want string }{
		{long, "/s/gw.sock", "over the 107-byte limit"},
		{"/state", long + "/gw.sock", "over the 107-byte limit"},
		{"/state", "/a b/gw.sock", `"/a b/gw.sock"`},
		{"/st:ate", "/s/gw.sock", `"/st:ate/socat.log"`},
		{"/state", "/s,x/gw.sock", `"/s,x/gw.sock"`},
	} {
		if err := checkPaths(tc.stateDir, tc.gwSock); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkPaths(%q, %q) = %v, want an error with %q", tc.stateDir, tc.gwSock, err, tc.want)
		}
	}
	if err := checkPaths("/var/lib/sandkey/sandboxes/0123/driver", "/var/lib/sandkey/sandboxes/0123/gw/gw.sock"); err != nil {
		t.Errorf("checkPaths of a usual gateway layout: %v", err)
	}
}

// guestEnvWant is the guest environment of testSpec.
func guestEnvWant(gateway string, extra ...string) []string {
	want := append([]string{
		"FOO=bar", "HOME=/root", "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
		"SANDKEY_AUTH_MODE=dir", "SANDKEY_GATEWAY=" + gateway, "SANDKEY_INSTANCE_ID=i-1", "SANDKEY_SANDBOX_ID=sbx-1",
		"SANDKEY_STATUS_FILE=/run/sandkey/status.json", "SANDKEY_TOKEN_DIR=/run/sandkey/auth",
	}, extra...)
	slices.Sort(want)
	return want
}

func TestGuestEnvironmentDropsTheUsersReservedVariablesAndSetsTheContract(t *testing.T) {
	spec := testSpec("/s")
	if got, want := guestEnv(spec, QEMUGateway, nil), guestEnvWant(QEMUGateway); !slices.Equal(got, want) {
		t.Errorf("guest environment:\n got %q\nwant %q", got, want)
	}
	spec.Env["PATH"], spec.Env["HOME"] = "/opt/bin", "/home/u"
	got := guestEnv(spec, QEMUGateway, nil)
	if !slices.Contains(got, "PATH=/opt/bin") || !slices.Contains(got, "HOME=/home/u") {
		t.Errorf("the user's PATH and HOME were not kept: %q", got)
	}
}

func TestInitrdIsTheImageFollowedByAnAlignedBootArchive(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "initrd.gz")
	image := []byte("not really gzip, but 27 b.") // an odd length, like a real image's
	if err := os.WriteFile(base, image, 0o644); err != nil {
		t.Fatal(err)
	}
	boot := guest.Boot{Env: guestEnv(testSpec(dir), QEMUGateway, nil), Args: []string{"--", "sh", "-c", `echo "a b"`}, StopPort: stopPort}
	out := filepath.Join(dir, "initrd.img")
	if err := writeInitrd(out, base, boot); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("initrd mode %v, want 0600: it holds the sandbox's environment", fi.Mode().Perm())
	}
	if !bytes.HasPrefix(data, image) {
		t.Fatal("the image's initramfs does not come first")
	}
	at := (len(image) + 3) / 4 * 4
	if !bytes.Equal(data[len(image):at], make([]byte, at-len(image))) || !bytes.HasPrefix(data[at:], []byte("070701")) {
		t.Fatalf("no newc archive at the 4-byte boundary %d after the image", at)
	}
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		testmain.SkipIfMissing(t, fmt.Errorf("cpio is missing (scripts/vm-deps.sh installs it): %w", err), true)
	}
	x := t.TempDir()
	cmd := exec.Command(cpio, "-id", "--quiet")
	cmd.Dir, cmd.Stdin = x, bytes.NewReader(data[at:])
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, b)
	}
	got, err := guest.ReadBoot(filepath.Join(x, guest.BootFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Env, boot.Env) || !slices.Equal(got.Args, boot.Args) || got.StopPort != stopPort {
		t.Errorf("boot file in the initrd = %+v, want %+v", got, boot)
	}
}

func TestConsoleExitCodeIsTheLastMarker(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		console string
		code    int
		ok      bool
	}{
		{"", 0, false},
		{"booting\n{\"msg\":\"workload exited\"}\n", 0, false},
		{"x\n" + guest.ExitMarker + "143\n[  9.1] reboot: Power down\n", 143, true},
		{guest.ExitMarker + "1\n" + guest.ExitMarker + "0\r\n", 0, true},
		{guest.ExitMarker + "garbage\n", 0, false},
		{strings.Repeat("x", 2*consoleTail) + "\n" + guest.ExitMarker + "7\n", 7, true},
	} {
		path := filepath.Join(dir, "console.log")
		os.WriteFile(path, []byte(tc.console), 0o600)
		if code, ok := consoleExitCode(path); code != tc.code || ok != tc.ok {
			t.Errorf("consoleExitCode(%.40q) = %d, %t; want %d, %t", tc.console, code, ok, tc.code, tc.ok)
		}
	}
	if _, ok := consoleExitCode(filepath.Join(dir, "none")); ok {
		t.Error("a missing console log gave an exit code")
	}
}

// TestKrunBackendMakesTheLibkrunCallsOfTheSandbox runs the libkrun backend
// against kruntest's stand-in for libkrun, which records its calls: the
// driver starts its runner (this test binary), which loads the stand-in.
func TestKrunBackendMakesTheLibkrunCallsOfTheSandbox(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	for _, p := range []string{"rootfs/bin", "rootfs/run"} {
		os.MkdirAll(filepath.Join(img, p), 0o755)
	}
	os.WriteFile(filepath.Join(img, "rootfs/init"), []byte("supervisor"), 0o755)
	os.Symlink("busybox", filepath.Join(img, "rootfs/bin/sh"))
	log := filepath.Join(dir, "calls.log")
	t.Setenv(runnerEnv, "1")
	t.Setenv(kruntest.LogEnv, log)

	lib := kruntest.Build(t, true)
	d, err := New(Config{Backend: BackendKrun, StateRoot: filepath.Join(dir, "root"), Image: img, KrunLibrary: lib,
		KrunRunner: []string{os.Args[0]}, CPUs: 2, MemoryMiB: 256, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	spec := testSpec(dir)
	ctx := context.Background()
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// The stand-in's krun_start_enter ends the runner as libkrun does when
	// the guest's workload exits: with its status.
	deadline := time.Now().Add(10 * time.Second)
	var st driver.Status
	for {
		if st, err = d.Status(ctx, spec.SandboxID); err != nil {
			t.Fatal(err)
		}
		if st.State == driver.StateStopped || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.State != driver.StateStopped || !st.Exited || st.ExitCode != kruntest.StartEnterExit || st.InstanceID != "i-1" {
		out, _ := os.ReadFile(filepath.Join(spec.StateDir, vmmLog))
		t.Fatalf("status = %+v, want stopped with the stand-in's exit %d; runner output:\n%s", st, kruntest.StartEnterExit, out)
	}

	root := filepath.Join(spec.StateDir, rootfsDir)
	env := `["` + strings.Join(guestEnvWant(KrunGateway, "SANDKEY_VM_INIT=on", "SANDKEY_VM_TAG=sandkey-auth"), `","`) + `"]`
	want := []string{
		"krun_create_ctx() = 7",
		"krun_set_vm_config(7, 2, 256)",
		fmt.Sprintf(`krun_set_root(7, "%s")`, root),
		fmt.Sprintf(`krun_add_virtiofs3(7, "sandkey-auth", "%s", 0, true)`, spec.TokenDir),
		"krun_disable_implicit_vsock(7)",
		"krun_add_vsock(7, 0)",
		fmt.Sprintf(`krun_add_vsock_port(7, 1024, "%s/gw.sock")`, spec.SocketDir),
		fmt.Sprintf(`krun_set_console_output(7, "%s/console.log")`, spec.StateDir),
		`krun_set_exec(7, "/init", ["--","sleep","600"], ` + env + `)`,
		`krun_set_env(7, ` + env + `)`,
		"krun_start_enter(7)",
	}
	if got := kruntest.Calls(t, log); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("libkrun calls:\n got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// The guest's root is the sandbox's own copy of the image's.
	if data, err := os.ReadFile(filepath.Join(root, "init")); err != nil || string(data) != "supervisor" {
		t.Errorf("copied root's init: %q, %v", data, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("copied root's bin/sh -> %q, %v", target, err)
	}
}
