// Command mkimage assembles sandkey's VM guest image from parts that
// images/vm/build.sh gathers: the files of Debian's cloud kernel package
// (extracted with dpkg -x), the static supervisor, and a static busybox.
//
//	mkimage -kernel-root DIR -supervisor FILE -busybox FILE -out DIR
//
// It writes into the output directory:
//
//	vmlinuz    the kernel
//	initrd.gz  the initramfs: /init is the supervisor; /bin holds busybox
//	           and a link per applet (the workload's toolbox); /lib/modules
//	           the modules the guest loads; /dev/console; mount points
//	cmdline    the kernel parameters the image needs (its module list)
//	rootfs/    the same tree as a directory, for libkrun, which shares a
//	           host directory as the guest's root instead of booting an
//	           initramfs (no device node: libkrun's own init mounts /dev)
//
// The kernel package ships no modules.dep, so the module list and its
// order are fixed here (shared/TESTING.md records the order that works):
// each module's `depends=` comes before it. A module the kernel has built
// in has no .ko and is skipped.
package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/vmfs/initramfs"
)

// guestModules are the modules the guest loads, in load order: virtio
// (PCI transport), virtio-fs for the token share, virtio-net for the
// session's forward, virtio-console for libkrun-style consoles.
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"virtio_mmio", "fuse", "virtiofs", "failover", "net_failover", "virtio_net", "virtio_console",
}

// guestModuleDir is where the modules are in the guest.
const guestModuleDir = "lib/modules"

// emptyDirs are the guest's mount points and directories, made 0755
// unless listed in dirModes.
var emptyDirs = []string{"bin", "dev", "etc", "etc/sandkey", "lib", guestModuleDir, "proc", "root", "run", "sys", "tmp"}

var dirModes = map[string]fs.FileMode{"tmp": 0o777 | fs.ModeSticky, "root": 0o700}

func main() {
	var o options
	flag.StringVar(&o.kernelRoot, "kernel-root", "", "directory holding the extracted kernel package(s)")
	flag.StringVar(&o.supervisor, "supervisor", "", "static supervisor binary (becomes /init)")
	flag.StringVar(&o.busybox, "busybox", "/bin/busybox", "static busybox binary")
	flag.StringVar(&o.out, "out", "", "output directory")
	flag.Parse()
	if err := build(o); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	kernelRoot, supervisor, busybox, out string
}

// image is the guest's file tree before it is written.
type image struct {
	dirs     []string
	files    []file
	symlinks map[string]string
}

type file struct {
	name string
	mode fs.FileMode
	data []byte
}

func build(o options) error {
	for name, v := range map[string]string{"-kernel-root": o.kernelRoot, "-supervisor": o.supervisor, "-busybox": o.busybox, "-out": o.out} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	for _, bin := range []string{o.supervisor, o.busybox} {
		if err := checkStatic(bin); err != nil {
			return err
		}
	}
	kernel, modDir, err := findKernel(o.kernelRoot)
	if err != nil {
		return err
	}
	modules, err := findModules(modDir, guestModules)
	if err != nil {
		return err
	}
	img, err := assemble(o, modules)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := copyFile(kernel, filepath.Join(o.out, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := writeInitrd(img, filepath.Join(o.out, "initrd.gz")); err != nil {
		return err
	}
	if err := writeRootfs(img, filepath.Join(o.out, "rootfs")); err != nil {
		return err
	}
	var paths []string
	for _, m := range modules {
		paths = append(paths, "/"+guestModuleDir+"/"+filepath.Base(m))
	}
	cmdline := guest.KernelParam(guest.VMModules, strings.Join(paths, ",")) + "\n"
	return os.WriteFile(filepath.Join(o.out, "cmdline"), []byte(cmdline), 0o644)
}

// checkStatic refuses a program that needs a dynamic loader: the guest
// has none (the supervisor is built with CGO_ENABLED=0; busybox comes from
// busybox-static, not busybox).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the guest has no dynamic loader: use a static build (busybox-static; CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// findKernel finds the one vmlinuz under root/boot and the module tree of
// the same version.
func findKernel(root string) (vmlinuz, modDir string, err error) {
	matches, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil || len(matches) != 1 {
		return "", "", fmt.Errorf("want one boot/vmlinuz-* under %s, found %v (%v)", root, matches, err)
	}
	version := strings.TrimPrefix(filepath.Base(matches[0]), "vmlinuz-")
	modDir = filepath.Join(root, "lib", "modules", version, "kernel")
	if _, err := os.Stat(modDir); err != nil {
		return "", "", fmt.Errorf("modules of kernel %s: %w", version, err)
	}
	return matches[0], modDir, nil
}

// findModules returns the .ko file of each name under dir, in order,
// leaving out names with no file (built into the kernel).
func findModules(dir string, names []string) ([]string, error) {
	found := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			found[name] = path
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list modules under %s: %w", dir, err)
	}
	var out []string
	for _, n := range names {
		if p, ok := found[n]; ok {
			out = append(out, p)
		} else {
			fmt.Fprintf(os.Stderr, "mkimage: no %s.ko: taken as built into the kernel\n", n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the modules %v under %s", names, dir)
	}
	return out, nil
}

func assemble(o options, modules []string) (image, error) {
	img := image{dirs: emptyDirs, symlinks: make(map[string]string)}
	add := func(name, src string, mode fs.FileMode) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		img.files = append(img.files, file{name, mode, data})
		return nil
	}
	if err := add("init", o.supervisor, 0o755); err != nil {
		return img, err
	}
	if err := add("bin/busybox", o.busybox, 0o755); err != nil {
		return img, err
	}
	for _, m := range modules {
		if err := add(guestModuleDir+"/"+filepath.Base(m), m, 0o644); err != nil {
			return img, err
		}
	}
	applets, err := busyboxApplets(o.busybox)
	if err != nil {
		return img, err
	}
	for _, a := range applets {
		if a != "busybox" {
			img.symlinks["bin/"+a] = "busybox"
		}
	}
	return img, nil
}

// busyboxApplets asks busybox for its applets; the guest gets a link to
// busybox for each, as `busybox --install -s /bin` would make.
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list applets of %s: %w", busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if !strings.ContainsAny(a, "/.") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s lists no applets", busybox)
	}
	return applets, nil
}

func writeInitrd(img image, path string) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	w := initramfs.NewWriter(zw)
	for _, d := range img.dirs {
		w.Dir(d, dirMode(d))
	}
	// Without /dev/console the kernel starts init with no standard streams.
	w.CharDevice("dev/console", 0o600, 5, 1)
	for _, f := range img.files {
		w.File(f.name, f.mode, f.data)
	}
	for _, name := range sortedKeys(img.symlinks) {
		w.Symlink(name, img.symlinks[name])
	}
	if err := errors.Join(w.Close(), zw.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeRootfs writes the tree as a directory, replacing an older one.
func writeRootfs(img image, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, d := range append([]string{""}, img.dirs...) {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, dirMode(d)); err != nil {
			return err
		}
	}
	for _, f := range img.files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(img.symlinks) {
		if err := os.Symlink(img.symlinks[name], filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func dirMode(d string) fs.FileMode {
	if m, ok := dirModes[d]; ok {
		return m
	}
	return 0o755
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}
