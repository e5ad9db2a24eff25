package vm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sandkey/sandkey/pkg/atomicfile"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/vmfs/initramfs"
)

// What this driver chooses for its guests beyond the contract of package
// guest: the token share's tag and how the guest reaches the gateway.
const (
	// ShareTag is the virtio-fs tag of the token directory's share.
	ShareTag = "sandkey-auth"
	// QEMUGateway is the session's address under QEMU: the restricted
	// user network's one guest forward.
	QEMUGateway = "tcp://10.0.2.100:1024"
	// KrunGateway is the session's address under libkrun: vsock port 1024
	// of the host (CID 2), mapped to the sandbox's socket.
	KrunGateway = "vsock://2:1024"
	// gatewayPort is the guest-side port of the session under both.
	gatewayPort = 1024
	// guestAddress is the guest's address on QEMU's user network, whose
	// forward to the gateway is 10.0.2.100.
	guestAddress = "10.0.2.15/24"
	// stopPort is the guest's serial device that carries stop requests:
	// QEMU's second serial port.
	stopPort = "/dev/ttyS1"
	// guestInit is the supervisor in the image's root.
	guestInit = "/init"
)

// The environment the workload gets when its spec sets none of these.
const (
	defaultPath = "/bin:/sbin:/usr/bin:/usr/sbin"
	defaultHome = "/root"
)

// guestEnv is the supervisor's environment in the guest: the user's
// variables (SANDKEY_* stripped), PATH and HOME when the user set none,
// the gateway's SANDKEY_* variables, and what only the driver knows: where
// the share is mounted, how to reach the gateway, where to keep the status
// file, and extra.
func guestEnv(spec driver.Spec, gateway string, extra map[string]string) []string {
	user := driver.StripReserved(spec.Env)
	if _, ok := user["PATH"]; !ok {
		user["PATH"] = defaultPath
	}
	if _, ok := user["HOME"]; !ok {
		user["HOME"] = defaultHome
	}
	sandbox := make(map[string]string, len(spec.SandboxEnv)+3+len(extra))
	for k, v := range spec.SandboxEnv {
		sandbox[k] = v
	}
	sandbox[guest.EnvTokenDir] = guest.DefaultTokenDir
	sandbox[guest.EnvGateway] = gateway
	sandbox[guest.EnvStatusFile] = guest.StatusFile
	for k, v := range extra {
		sandbox[k] = v
	}
	return driver.Environ(user, sandbox)
}

// supervisorArgs runs the spec's command under the supervisor.
func supervisorArgs(spec driver.Spec) []string { return append([]string{"--"}, spec.Command...) }

// writeInitrd writes the initramfs of one QEMU start to path: the image's
// initramfs, padding, then an archive holding the boot file (see package
// initramfs), so the kernel command line carries nothing of the sandbox
// but the share's tag and the guest's address.
func writeInitrd(path, base string, boot guest.Boot) error {
	data, err := boot.Encode()
	if err != nil {
		return err
	}
	in, err := os.Open(base)
	if err != nil {
		return fmt.Errorf("guest image: %w", err)
	}
	defer in.Close()
	return atomicfile.WriteFrom(path, 0o600, func(out io.Writer) error {
		n, err := io.Copy(out, in)
		if err != nil {
			return fmt.Errorf("copy %s: %w", base, err)
		}
		w := initramfs.NewWriter(out)
		_, perr := out.Write(initramfs.Padding(n))
		dir := strings.TrimPrefix(filepath.Dir(guest.BootFile), "/")
		w.Dir(filepath.Dir(dir), 0o755)
		w.Dir(dir, 0o755)
		w.File(guest.BootFile, 0o600, data)
		return errors.Join(perr, w.Close())
	})
}

// consoleTail bounds how much of the console log's end is searched for the
// guest's exit code.
const consoleTail = 64 << 10

// consoleExitCode finds the exit code the guest's init wrote to the
// console (guest.ExitMarker) before powering off; the last one counts.
func consoleExitCode(path string) (int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > consoleTail {
		f.Seek(fi.Size()-consoleTail, io.SeekStart)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndex(data, []byte(guest.ExitMarker))
	if i < 0 {
		return 0, false
	}
	line, _, _ := bytes.Cut(data[i+len(guest.ExitMarker):], []byte("\n"))
	code, err := strconv.Atoi(strings.TrimSpace(string(line)))
	return code, err == nil
}
