package guest

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// BootFile is where a VM driver puts the sandbox's Boot in the guest's
// root file system (an archive it appends to the image's initramfs).
const BootFile = "/etc/sandkey/boot.json"

// StopRequest is the line a VM driver writes to the guest's stop port to
// ask for a graceful stop.
const StopRequest = "stop"

// ExitMarker starts the line the guest's init writes to the console before
// it powers the VM off: ExitMarker followed by the supervisor's exit code.
const ExitMarker = "sandkey-vm-exit-code="

// maxBootFile caps the boot file's size: it holds an environment and a
// command line, never anything large.
const maxBootFile = 1 << 20

// Boot is what a VM's driver tells the guest's init beyond the kernel
// command line: the supervisor's environment and arguments, which the
// kernel command line cannot carry well (it is visible in the host's
// process list, holds 2 KiB, and has no escape for quotes).
type Boot struct {
	// Env holds KEY=VALUE entries added to the supervisor's environment
	// before its flags are parsed (the SANDKEY_* variables and the
	// workload's own).
	Env []string `json:"env"`
	// Args are the supervisor's arguments when it was started without
	// any: [flags...] -- command args...
	Args []string `json:"args"`
	// StopPort is a serial device on which a line "stop" asks the
	// supervisor to stop as on SIGTERM; empty for none.
	StopPort string `json:"stop_port,omitempty"`
}

// Encode returns b as the boot file's contents, after checking every
// environment entry.
func (b Boot) Encode() ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	return json.Marshal(b)
}

func (b Boot) check() error {
	for _, kv := range b.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("boot environment entry %q: want NAME=VALUE without NUL bytes", kv)
		}
	}
	return nil
}

// ReadBoot reads and checks a boot file. A missing file yields an error
// matching fs.ErrNotExist.
func ReadBoot(path string) (Boot, error) {
	f, err := os.Open(path)
	if err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	defer f.Close()
	var b Boot
	dec := json.NewDecoder(&limitedReader{f: f, left: maxBootFile})
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	if err := b.check(); err != nil {
		return Boot{}, fmt.Errorf("read boot file %s: %w", path, err)
	}
	return b, nil
}

type limitedReader struct {
	f    *os.File
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxBootFile)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

// The settings of a VM's init duties (the supervisor's vminit), which a VM
// driver passes as kernel parameters KernelParamPrefix<key>=value, or as
// variables EnvVMPrefix<KEY>=value where the kernel command line is not
// its own (libkrun boots its own kernel with its own command line).
const (
	KernelParamPrefix = "sandkey."
	EnvVMPrefix       = "SANDKEY_VM_"
	// EnvVMInit is the supervisor's switch for the init duties (auto, on,
	// off), not a setting: "on" where the VM's own init starts it.
	EnvVMInit = EnvVMPrefix + "INIT"

	// The settings' keys.
	VMShareTag   = "tag"     // the virtio-fs tag of the token directory's share
	VMShareMount = "mount"   // where it is mounted (default DefaultTokenDir)
	VMModules    = "modules" // comma-separated .ko paths, loaded in order
	VMInterface  = "iface"   // the network interface of VMAddress (default eth0)
	VMAddress    = "addr"    // IPv4 address with prefix length
	VMGateway    = "gw"      // IPv4 address of the default route
)

// KernelParam is the kernel parameter that passes a setting's value:
// KernelParam(VMShareTag, "auth") is "sandkey.tag=auth".
func KernelParam(key, value string) string { return KernelParamPrefix + key + "=" + value }

// VMEnv is the variable that passes a setting: VMEnv(VMShareTag) is
// SANDKEY_VM_TAG.
func VMEnv(key string) string { return EnvVMPrefix + strings.ToUpper(key) }
