package vm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/vmfs/krun"
)

// startKrun boots the spec's VM under libkrun, in a runner process of its
// own (krun_start_enter takes its process over).
func (d *Driver) startKrun(spec driver.Spec) error {
	id, dir := spec.SandboxID, spec.StateDir
	img, err := d.image(spec)
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	root := filepath.Join(dir, rootfsDir)
	if err := ensureRootfs(filepath.Join(img, rootfsDir), root); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	vm := d.krunVM(spec, root)
	if err := vm.Check(); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	vmPath := filepath.Join(dir, krunFile)
	if err := statedir.WriteJSON(vmPath, vm); err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	out, err := openLog(filepath.Join(dir, vmmLog))
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", id, err)
	}
	defer out.Close()

	runner := d.cfg.KrunRunner
	cmd := exec.Command(runner[0], append(runner[1:len(runner):len(runner)], vmPath)...)
	// The runner is the gateway's own binary and gets its environment,
	// which says where the dynamic loader finds libkrun. The guest's
	// environment is the VM description's alone.
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sandbox %s: run libkrun runner %s: %w", id, runner[0], err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	vmm, err := hostproc.Identify(pid)
	if err != nil {
		killChild(pid)
		return fmt.Errorf("start sandbox %s: libkrun runner: %w", id, err)
	}
	rec := vmRecord{Backend: BackendKrun, InstanceID: spec.InstanceID, StartedAt: d.now(), VMM: vmm}
	werr := statedir.WriteJSON(filepath.Join(dir, vmFile), rec)
	// Registered after the VM record is written, so that an exit record
	// never precedes the start it belongs to.
	d.reaper.Add(vmm, func(ws unix.WaitStatus, err error) {
		if err == nil { // else its status is lost
			d.recordExit(id, dir, vmm, ws)
		}
	})
	if werr != nil {
		vmm.KillSession(killWait)
		return fmt.Errorf("start sandbox %s: %w", id, werr)
	}
	d.log.Info("sandbox started", zap.String("sandbox_id", id), zap.String("instance_id", spec.InstanceID),
		zap.String("backend", BackendKrun), zap.Int("runner_pid", vmm.PID), zap.String("library", vm.Library))
	return nil
}

// krunVM describes the spec's VM for the runner: the token directory
// shared read-only, the sandbox's socket as vsock port 1024, and the
// supervisor as the program, told by SANDKEY_VM_* to mount the share
// (libkrun's init has set up the rest).
func (d *Driver) krunVM(spec driver.Spec, root string) krun.VM {
	env := guestEnv(spec, KrunGateway, map[string]string{
		guest.EnvVMInit:               "on",
		guest.VMEnv(guest.VMShareTag): ShareTag,
	})
	return krun.VM{
		Library:       d.cfg.KrunLibrary,
		CPUs:          uint8(d.cfg.CPUs),
		MemoryMiB:     uint32(d.cfg.MemoryMiB),
		Root:          root,
		Shares:        []krun.Share{{Tag: ShareTag, Path: spec.TokenDir, ReadOnly: true}},
		VsockPorts:    []krun.VsockPort{{Port: gatewayPort, Path: filepath.Join(spec.SocketDir, guest.SocketName)}},
		ConsoleOutput: filepath.Join(spec.StateDir, consoleLog),
		Exec:          guestInit,
		Args:          supervisorArgs(spec),
		Env:           env,
	}
}

// recordExit keeps the runner's exit status: libkrun exits with the
// workload's.
func (d *Driver) recordExit(id, dir string, vmm hostproc.Process, ws unix.WaitStatus) {
	code := hostproc.ExitCode(ws)
	if err := statedir.WriteJSON(filepath.Join(dir, exitFile), exitRecord{VMM: vmm, Code: code, ExitedAt: d.now()}); err != nil {
		d.log.Warn("record exit of libkrun runner", zap.String("sandbox_id", id), zap.Error(err))
	}
	d.log.Info("sandbox VM exited", zap.String("sandbox_id", id), zap.Int("runner_pid", vmm.PID), zap.Int("exit_code", code))
}

// ensureRootfs gives the sandbox its own copy of the image's root, made
// once: libkrun shares the root with the guest writable, and one
// sandbox's writes must not reach another's.
func ensureRootfs(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("guest image root: %w (images/vm/build.sh makes rootfs/)", err)
	}
	tmp := dst + ".tmp"
	os.RemoveAll(tmp)
	if err := copyTree(src, tmp); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("copy guest root %s: %w", src, err)
	}
	return os.Rename(tmp, dst)
}

// copyTree copies directories, regular files and symlinks, with their
// permission bits.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm()|info.Mode()&(fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid))
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: not a directory, file or symlink", path)
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(out, in)
	return errors.Join(cerr, out.Close())
}
