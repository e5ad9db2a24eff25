// Package krun runs a libkrun microVM for a sandbox: the token directory
// shared read-only over virtio-fs, the sandbox's attested gateway socket
// reachable from the guest as vsock port 1024, and the supervisor as the
// program libkrun starts (DESIGN.md §7, §8).
//
// libkrun is loaded with dlopen when Run is called, never linked: the
// gateway builds and runs where libkrun is absent, and Run then fails
// saying so. Without cgo (CGO_ENABLED=0) nothing can be loaded, and Run
// fails with ErrNoCgo.
//
// krun_start_enter takes over its process: on success it never returns,
// and the process exits with the workload's exit code when the VM shuts
// down. So Run is meant for a process of its own: the VM driver starts one
// per VM (`gateway vm-krun-run <vm.json>`), and that process is the VM as
// far as the host's process table goes.
//
// Run makes exactly these calls, in this order, and stops at the first
// that fails (a negative return, which libkrun makes an errno):
//
//	krun_create_ctx()
//	krun_set_vm_config(ctx, cpus, ram_mib)
//	krun_set_root(ctx, root)
//	krun_add_virtiofs3(ctx, tag, path, 0, read_only)   for each share
//	krun_disable_implicit_vsock(ctx)
//	krun_add_vsock(ctx, 0)                             a vsock device without TSI
//	krun_add_vsock_port(ctx, port, path)               for each port
//	krun_set_console_output(ctx, path)                 when a console file is set
//	krun_set_exec(ctx, exec, args, env)
//	krun_set_env(ctx, env)
//	krun_start_enter(ctx)
//
// The guest gets no network but its vsock ports. Left alone, libkrun adds
// a vsock device with socket impersonation (TSI): the guest's AF_INET
// sockets are opened by the runner, on the host, so the guest would reach
// the host's loopback (the gateway's listeners) and every network the host
// reaches. Run replaces that device with one without TSI, and refuses a
// libkrun too old to let it.
//
// The environment goes to both krun_set_exec and krun_set_env, never
// NULL: given NULL, libkrun copies the calling process's environment,
// which is the gateway's.
package krun

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultLibrary is the library Run loads when VM.Library is empty; the
// dynamic loader searches its usual paths for it.
const DefaultLibrary = "libkrun.so.1"

// ErrNoCgo is Run's error in a binary built without cgo.
var ErrNoCgo = errors.New("libkrun: this binary was built without cgo (CGO_ENABLED=0), so it cannot load libkrun; build the gateway with CGO_ENABLED=1 to run libkrun microVMs")

// VM is one libkrun microVM. The driver writes it as JSON for the runner
// process, which reads it back with ReadVM.
type VM struct {
	// Library is the libkrun shared object: a file name the dynamic loader
	// searches for, or a path. Empty means DefaultLibrary.
	Library   string `json:"library,omitempty"`
	CPUs      uint8  `json:"cpus"`
	MemoryMiB uint32 `json:"memory_mib"`
	// Root is the host directory the guest boots with as its root file
	// system.
	Root       string      `json:"root"`
	Shares     []Share     `json:"shares,omitempty"`
	VsockPorts []VsockPort `json:"vsock_ports,omitempty"`
	// ConsoleOutput, when set, is the file the guest's console is written
	// to.
	ConsoleOutput string `json:"console_output,omitempty"`
	// Exec is the program to run, a path inside Root; Args are its
	// arguments (without a program name) and Env its whole environment
	// (KEY=VALUE).
	Exec string   `json:"exec"`
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env"`
}

// Share is a host directory exposed to the guest over virtio-fs, mounted
// by its tag.
type Share struct {
	Tag      string `json:"tag"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// VsockPort maps a guest vsock port to a host unix socket: a guest
// connection to the port is a connection to the socket.
type VsockPort struct {
	Port uint32 `json:"port"`
	Path string `json:"path"`
}

// Check reports what makes vm unusable, before anything is loaded.
func (vm VM) Check() error {
	var errs []error
	if vm.CPUs == 0 || vm.MemoryMiB == 0 {
		errs = append(errs, fmt.Errorf("cpus %d and memory %d MiB must be positive", vm.CPUs, vm.MemoryMiB))
	}
	if !filepath.IsAbs(vm.Root) {
		errs = append(errs, fmt.Errorf("root %q is not an absolute path", vm.Root))
	}
	if vm.Exec == "" {
		errs = append(errs, errors.New("no program to run (exec)"))
	}
	for _, s := range vm.Shares {
		if s.Tag == "" || !filepath.IsAbs(s.Path) {
			errs = append(errs, fmt.Errorf("share %q of %q: need a tag and an absolute path", s.Tag, s.Path))
		}
	}
	for _, p := range vm.VsockPorts {
		if p.Port == 0 || !filepath.IsAbs(p.Path) {
			errs = append(errs, fmt.Errorf("vsock port %d to %q: need a port and an absolute socket path", p.Port, p.Path))
		}
	}
	for _, list := range [][]string{vm.Args, vm.Env, {vm.Library, vm.Root, vm.Exec, vm.ConsoleOutput}} {
		for _, s := range list {
			if strings.ContainsRune(s, 0) {
				errs = append(errs, fmt.Errorf("%q holds a NUL byte", s))
			}
		}
	}
	for _, kv := range vm.Env {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			errs = append(errs, fmt.Errorf("environment entry %q is not NAME=VALUE", kv))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("libkrun VM: %w", err)
	}
	return nil
}

// ReadVM reads a VM written as JSON and checks it.
func ReadVM(path string) (VM, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return VM{}, fmt.Errorf("read libkrun VM %s: %w", path, err)
	}
	var vm VM
	if err := json.Unmarshal(data, &vm); err != nil {
		return VM{}, fmt.Errorf("read libkrun VM %s: %w", path, err)
	}
	if err := vm.Check(); err != nil {
		return VM{}, fmt.Errorf("read libkrun VM %s: %w", path, err)
	}
	return vm, nil
}

func (vm VM) library() string {
	if vm.Library == "" {
		return DefaultLibrary
	}
	return vm.Library
}
