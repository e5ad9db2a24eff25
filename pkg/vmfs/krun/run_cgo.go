//go:build cgo

package krun

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

// The libkrun entry points Run calls, by their C signatures (libkrun.h).
typedef int32_t (*krun_ctx_fn)(void);
typedef int32_t (*krun_ctx_id_fn)(uint32_t);
typedef int32_t (*krun_vm_config_fn)(uint32_t, uint8_t, uint32_t);
typedef int32_t (*krun_path_fn)(uint32_t, const char *);
typedef int32_t (*krun_virtiofs3_fn)(uint32_t, const char *, const char *, uint64_t, bool);
typedef int32_t (*krun_vsock_port_fn)(uint32_t, uint32_t, const char *);
typedef int32_t (*krun_add_vsock_fn)(uint32_t, uint32_t);
typedef int32_t (*krun_exec_fn)(uint32_t, const char *, const char *const *, const char *const *);
typedef int32_t (*krun_env_fn)(uint32_t, const char *const *);

// cgo cannot call a C function pointer: these trampolines do.
static int32_t call_ctx(void *f) { return ((krun_ctx_fn)f)(); }
static int32_t call_ctx_id(void *f, uint32_t ctx) { return ((krun_ctx_id_fn)f)(ctx); }
static int32_t call_vm_config(void *f, uint32_t ctx, uint8_t cpus, uint32_t mib) { return ((krun_vm_config_fn)f)(ctx, cpus, mib); }
static int32_t call_path(void *f, uint32_t ctx, const char *p) { return ((krun_path_fn)f)(ctx, p); }
static int32_t call_virtiofs3(void *f, uint32_t ctx, const char *tag, const char *p, uint64_t shm, bool ro) { return ((krun_virtiofs3_fn)f)(ctx, tag, p, shm, ro); }
static int32_t call_add_vsock(void *f, uint32_t ctx, uint32_t tsi) { return ((krun_add_vsock_fn)f)(ctx, tsi); }
static int32_t call_vsock_port(void *f, uint32_t ctx, uint32_t port, const char *p) { return ((krun_vsock_port_fn)f)(ctx, port, p); }
static int32_t call_exec(void *f, uint32_t ctx, const char *exec, char **argv, char **envp) { return ((krun_exec_fn)f)(ctx, exec, (const char *const *)argv, (const char *const *)envp); }
static int32_t call_env(void *f, uint32_t ctx, char **envp) { return ((krun_env_fn)f)(ctx, (const char *const *)envp); }
*/
import "C"

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// symbols are the entry points Run needs; optional ones may be missing
// from older libkrun releases. why, when set, says what a libkrun without
// the entry point would cost.
var symbols = []struct {
	name     string
	optional bool
	why      string
}{
	{"krun_create_ctx", false, ""},
	{"krun_free_ctx", false, ""},
	{"krun_set_vm_config", false, ""},
	{"krun_set_root", false, ""},
	{"krun_add_virtiofs3", false, ""},
	{"krun_disable_implicit_vsock", false, noTSI},
	{"krun_add_vsock", false, noTSI},
	{"krun_add_vsock_port", false, ""},
	{"krun_set_console_output", true, ""},
	{"krun_set_exec", false, ""},
	{"krun_set_env", false, ""},
	{"krun_start_enter", false, ""},
}

const noTSI = "without it libkrun gives every guest the host's network (TSI), which a sandbox must not have"

// library is a loaded libkrun.
type library struct {
	name   string
	handle unsafe.Pointer
	fn     map[string]unsafe.Pointer
}

// open loads libkrun and resolves every entry point Run needs.
func open(name string) (*library, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	// dlerror's state is per thread: stay on this one until it is read.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := C.dlopen(cname, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("load libkrun %s: %s; install libkrun (and libkrunfw), or point the vm driver at it with --vm-krun-library", name, dlerror())
	}
	lib := &library{name: name, handle: h, fn: make(map[string]unsafe.Pointer)}
	for _, s := range symbols {
		cs := C.CString(s.name)
		p := C.dlsym(h, cs)
		C.free(unsafe.Pointer(cs))
		if p == nil && !s.optional {
			C.dlclose(h)
			why := ""
			if s.why != "" {
				why = " (" + s.why + ")"
			}
			return nil, fmt.Errorf("load libkrun %s: it has no %s%s: a newer libkrun is needed", name, s.name, why)
		}
		lib.fn[s.name] = p
	}
	return lib, nil
}

func dlerror() string {
	if e := C.dlerror(); e != nil {
		return C.GoString(e)
	}
	return "unknown dlopen error"
}

// Run loads libkrun, configures vm in a new libkrun context and enters it
// (see the package doc for the calls). On success it does not return: the
// process exits when the VM does. An error says which call failed.
func Run(vm VM) error {
	if err := vm.Check(); err != nil {
		return err
	}
	lib, err := open(vm.library())
	if err != nil {
		return err
	}
	ctxID := C.call_ctx(lib.fn["krun_create_ctx"])
	if ctxID < 0 {
		C.dlclose(lib.handle)
		return callError("krun_create_ctx()", ctxID)
	}
	ctx := C.uint32_t(ctxID)
	err = lib.configure(ctx, vm)
	if err == nil {
		ret := C.call_ctx_id(lib.fn["krun_start_enter"], ctx)
		// krun_start_enter returns only when the VM could not start.
		err = callError(fmt.Sprintf("krun_start_enter(%d)", ctx), ret)
		if ret >= 0 {
			err = fmt.Errorf("libkrun: krun_start_enter(%d) returned %d without starting the VM", ctx, ret)
		}
	}
	C.call_ctx_id(lib.fn["krun_free_ctx"], ctx)
	C.dlclose(lib.handle)
	return err
}

// configure makes every call before krun_start_enter.
func (lib *library) configure(ctx C.uint32_t, vm VM) error {
	var strs cStrings
	defer strs.free()

	if ret := C.call_vm_config(lib.fn["krun_set_vm_config"], ctx, C.uint8_t(vm.CPUs), C.uint32_t(vm.MemoryMiB)); ret < 0 {
		return callError(fmt.Sprintf("krun_set_vm_config(%d, %d, %d)", ctx, vm.CPUs, vm.MemoryMiB), ret)
	}
	if ret := C.call_path(lib.fn["krun_set_root"], ctx, strs.c(vm.Root)); ret < 0 {
		return callError(fmt.Sprintf("krun_set_root(%d, %q)", ctx, vm.Root), ret)
	}
	for _, s := range vm.Shares {
		ret := C.call_virtiofs3(lib.fn["krun_add_virtiofs3"], ctx, strs.c(s.Tag), strs.c(s.Path), 0, C.bool(s.ReadOnly))
		if ret < 0 {
			return callError(fmt.Sprintf("krun_add_virtiofs3(%d, %q, %q, 0, %t)", ctx, s.Tag, s.Path, s.ReadOnly), ret)
		}
	}
	// The guest's one way out is its vsock ports. libkrun's implicit vsock
	// device would also hijack the guest's AF_INET sockets (TSI) and open
	// them in this process, on the host: its loopback, where the gateway
	// listens, and every network the host reaches. It is replaced by a
	// device without TSI, which still carries the ports.
	if ret := C.call_ctx_id(lib.fn["krun_disable_implicit_vsock"], ctx); ret < 0 {
		return callError(fmt.Sprintf("krun_disable_implicit_vsock(%d)", ctx), ret)
	}
	if ret := C.call_add_vsock(lib.fn["krun_add_vsock"], ctx, 0); ret < 0 {
		return callError(fmt.Sprintf("krun_add_vsock(%d, 0)", ctx), ret)
	}
	for _, p := range vm.VsockPorts {
		if ret := C.call_vsock_port(lib.fn["krun_add_vsock_port"], ctx, C.uint32_t(p.Port), strs.c(p.Path)); ret < 0 {
			return callError(fmt.Sprintf("krun_add_vsock_port(%d, %d, %q)", ctx, p.Port, p.Path), ret)
		}
	}
	if vm.ConsoleOutput != "" {
		f := lib.fn["krun_set_console_output"]
		if f == nil {
			return fmt.Errorf("libkrun %s has no krun_set_console_output: the console cannot go to %s", lib.name, vm.ConsoleOutput)
		}
		if ret := C.call_path(f, ctx, strs.c(vm.ConsoleOutput)); ret < 0 {
			return callError(fmt.Sprintf("krun_set_console_output(%d, %q)", ctx, vm.ConsoleOutput), ret)
		}
	}
	argv, envp := strs.array(vm.Args), strs.array(vm.Env)
	if ret := C.call_exec(lib.fn["krun_set_exec"], ctx, strs.c(vm.Exec), argv, envp); ret < 0 {
		return callError(fmt.Sprintf("krun_set_exec(%d, %q, %d args, %d variables)", ctx, vm.Exec, len(vm.Args), len(vm.Env)), ret)
	}
	if ret := C.call_env(lib.fn["krun_set_env"], ctx, envp); ret < 0 {
		return callError(fmt.Sprintf("krun_set_env(%d, %d variables)", ctx, len(vm.Env)), ret)
	}
	return nil
}

// callError turns a negative libkrun return into an error naming the call.
func callError(call string, ret C.int32_t) error {
	if ret >= 0 {
		return nil
	}
	return fmt.Errorf("libkrun: %s: %w", call, syscall.Errno(-ret))
}

// cStrings owns the C memory of the strings and arrays passed to libkrun,
// which copies what it keeps.
type cStrings struct{ ptrs []unsafe.Pointer }

func (s *cStrings) c(v string) *C.char {
	p := C.CString(v)
	s.ptrs = append(s.ptrs, unsafe.Pointer(p))
	return p
}

// array returns a NULL-terminated C array of vs; never NULL itself, even
// when vs is empty.
func (s *cStrings) array(vs []string) **C.char {
	size := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	arr := (**C.char)(C.calloc(C.size_t(len(vs)+1), size))
	s.ptrs = append(s.ptrs, unsafe.Pointer(arr))
	elems := unsafe.Slice(arr, len(vs)+1)
	for i, v := range vs {
		elems[i] = s.c(v)
	}
	return arr
}

func (s *cStrings) free() {
	for _, p := range s.ptrs {
		C.free(p)
	}
	s.ptrs = nil
}
