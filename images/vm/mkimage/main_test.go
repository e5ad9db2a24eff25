package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeKernelPackage lays out what dpkg -x of a kernel package gives, with
// every module but the built-in ones.
func fakeKernelPackage(t *testing.T, builtin ...string) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-6.1.0-99-cloud-amd64", "kernel")
	write("boot/config-6.1.0-99-cloud-amd64", "config")
	for i, m := range guestModules {
		if !slices.Contains(builtin, m) {
			// Spread over directories, as in the package.
			write(filepath.Join("lib/modules/6.1.0-99-cloud-amd64/kernel", []string{"drivers/virtio", "fs/fuse", "net"}[i%3], m+".ko"), "module "+m)
		}
	}
	write("lib/modules/6.1.0-99-cloud-amd64/kernel/drivers/other/unused.ko", "unused")
	return root
}

// staticBinary is a static program this test can run as busybox: a
// stand-in that lists three applets.
func staticBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte(`package main

import "fmt"

func main() { fmt.Println("busybox\nsh\nsleep\ncat") }
`), 0o644)
	bin := filepath.Join(dir, "busybox")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build a static stand-in: %v\n%s", err, out)
	}
	return bin
}

func TestBuildWritesKernelInitrdCmdlineAndRootfs(t *testing.T) {
	root := fakeKernelPackage(t, "virtio_mmio")
	bb := staticBinary(t)
	out := t.TempDir()
	if err := build(options{kernelRoot: root, supervisor: bb, busybox: bb, out: out}); err != nil {
		t.Fatal(err)
	}
	if k, _ := os.ReadFile(filepath.Join(out, "vmlinuz")); string(k) != "kernel" {
		t.Errorf("vmlinuz = %q", k)
	}
	cmdline, _ := os.ReadFile(filepath.Join(out, "cmdline"))
	var want []string
	for _, m := range guestModules {
		if m != "virtio_mmio" {
			want = append(want, "/lib/modules/"+m+".ko")
		}
	}
	if got := strings.TrimSpace(string(cmdline)); got != "sandkey.modules="+strings.Join(want, ",") {
		t.Errorf("cmdline = %q, want the modules in load order without the built-in one", got)
	}

	f, err := os.Open(filepath.Join(out, "initrd.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		testmain.SkipIfMissing(t, fmt.Errorf("cpio is missing (scripts/vm-deps.sh installs it): %w", err), true)
	}
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	listing, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v\n%s", err, listing)
	}
	for _, entry := range []string{"crw------- ", " dev/console", " init", " bin/busybox", " bin/sh -> busybox",
		" bin/sleep -> busybox", " lib/modules/virtiofs.ko", "drwxrwxrwt ", " tmp", " proc", " run", " etc/sandkey"} {
		if !strings.Contains(string(listing), entry) {
			t.Errorf("initrd lacks %q:\n%s", entry, listing)
		}
	}
	if strings.Contains(string(listing), "unused.ko") || strings.Contains(string(listing), "bin/busybox -> ") {
		t.Errorf("initrd holds an unlisted module or a busybox link to itself:\n%s", listing)
	}
	if target, err := os.Readlink(filepath.Join(out, "rootfs/bin/cat")); err != nil || target != "busybox" {
		t.Errorf("rootfs/bin/cat -> %q, %v", target, err)
	}
	if fi, err := os.Stat(filepath.Join(out, "rootfs/tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("rootfs/tmp: %v, %v; want sticky", fi.Mode(), err)
	}
}

func TestBuildRefusesDynamicProgramsAndIncompletePackages(t *testing.T) {
	bb := staticBinary(t)
	dynamic := "/bin/ls" // Debian's is dynamically linked
	if err := build(options{kernelRoot: fakeKernelPackage(t), supervisor: bb, busybox: dynamic, out: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("build with a dynamic busybox = %v, want it refused", err)
	}
	if err := build(options{kernelRoot: t.TempDir(), supervisor: bb, busybox: bb, out: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "boot/vmlinuz-*") {
		t.Errorf("build without a kernel = %v, want it refused", err)
	}
	if err := build(options{kernelRoot: fakeKernelPackage(t, guestModules...), supervisor: bb, busybox: bb, out: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "none of the modules") {
		t.Errorf("build without modules = %v, want it refused", err)
	}
	if err := build(options{}); err == nil || !strings.Contains(err.Error(), "is required") {
		t.Errorf("build without options = %v", err)
	}
}
