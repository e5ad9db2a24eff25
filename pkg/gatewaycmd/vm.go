package gatewaycmd

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/vm"
	"github.com/sandkey/sandkey/pkg/vmfs/krun"
)

// vmOptions are the vm driver's flags.
type vmOptions struct {
	backend     string
	image       string
	accel       string
	memoryMiB   int
	cpus        int
	krunLibrary string
}

func addVMFlags(fs *pflag.FlagSet, o *vmOptions) {
	fs.StringVar(&o.backend, "vm-backend", vm.BackendQEMU, "backend of the vm driver: qemu (with virtiofsd) or krun (libkrun; needs a gateway built with cgo)")
	fs.StringVar(&o.image, "vm-image", "", "guest image directory for the vm driver, as images/vm/build.sh makes it (default: vm/ beside this binary, where make vm-image puts it)")
	fs.StringVar(&o.accel, "vm-accel", vm.AccelAuto, "QEMU accelerator: auto (KVM when /dev/kvm works), kvm or tcg")
	fs.IntVar(&o.memoryMiB, "vm-memory", vm.DefaultMemoryMiB, "memory of each VM, in MiB")
	fs.IntVar(&o.cpus, "vm-cpus", vm.DefaultCPUs, "vCPUs of each VM")
	fs.StringVar(&o.krunLibrary, "vm-krun-library", krun.DefaultLibrary, "libkrun shared library (a name the dynamic loader finds, or a path)")
}

func buildVMDriver(env driverEnv, o *vmOptions) (driver.Driver, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary (the libkrun runner): %w", err)
	}
	image := o.image
	if image == "" {
		image = filepath.Join(filepath.Dir(self), "vm")
	}
	if image, err = filepath.Abs(image); err != nil {
		return nil, err
	}
	return vm.New(vm.Config{
		Backend: o.backend, StateRoot: filepath.Join(env.stateDir, "drivers", vm.Name), Image: image,
		Accel: o.accel, MemoryMiB: o.memoryMiB, CPUs: o.cpus,
		KrunLibrary: o.krunLibrary, KrunRunner: []string{self, vmKrunRunUse},
		Logger: env.log.Named(vm.Name),
	})
}

// vmKrunRunUse is the hidden command the vm driver runs each libkrun VM
// with.
const vmKrunRunUse = "vm-krun-run"

// newVMKrunRunCommand is `gateway vm-krun-run <vm.json>`: it runs one
// libkrun VM in this process, which libkrun takes over, and exits with
// the guest workload's status. The vm driver starts it; people do not.
func newVMKrunRunCommand() *cobra.Command {
	return &cobra.Command{
		Use:    vmKrunRunUse + " VM_JSON",
		Short:  "Run one libkrun microVM described by VM_JSON (used by the vm driver)",
		Hidden: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return Usagef("%s: want one argument, the VM description, got %d", vmKrunRunUse, len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			spec, err := krun.ReadVM(args[0])
			if err != nil {
				return usageError{err}
			}
			// Run returns only when the VM could not start.
			return krun.Run(spec)
		},
	}
}
