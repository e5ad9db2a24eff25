package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
)

// The files of a sandbox's state directory (see the package doc).
const (
	specFile       = "spec.json"     // specRecord, written by Create
	vmFile         = "vm.json"       // vmRecord of the current or last start
	exitFile       = "exit.json"     // exitRecord of the last start's VMM, once reaped here
	consoleLog     = "console.log"   // the guest's console, this start
	consoleLogPrev = "console.log.1" // the guest's console, the start before
	vmmLog         = "vmm.log"       // QEMU's or the libkrun runner's own output, appended
	virtiofsdLog   = "virtiofsd.log" // virtiofsd's output, appended
	socatLog       = "socat.log"     // the session bridges' errors, appended
	initrdFile     = "initrd.img"    // the image's initramfs plus this start's boot archive
	fsSocket       = "vfs.sock"      // virtiofsd's vhost-user socket
	ctlSocket      = "ctl.sock"      // QEMU's end of the guest's stop port
	krunFile       = "krun.json"     // the libkrun runner's VM description
	rootfsDir      = "rootfs"        // libkrun: this sandbox's copy of the image's root
)

// indexDir is the directory under Config.StateRoot that maps sandbox IDs to
// state directories.
const indexDir = "sandboxes"

// specRecord is what Create keeps of a spec, so that a Start after a
// gateway restart knows the command. SandboxEnv is left out: the gateway
// builds it anew for every start.
type specRecord struct {
	SandboxID string            `json:"sandbox_id"`
	Name      string            `json:"name,omitempty"`
	Image     string            `json:"image,omitempty"`
	Command   []string          `json:"command"`
	Env       map[string]string `json:"env,omitempty"`
	TokenDir  string            `json:"token_dir"`
	SocketDir string            `json:"socket_dir"`
	StateDir  string            `json:"state_dir"`
}

func newSpecRecord(spec driver.Spec) specRecord {
	return specRecord{
		SandboxID: spec.SandboxID, Name: spec.Name, Image: spec.Image, Command: spec.Command,
		Env: driver.StripReserved(spec.Env), TokenDir: spec.TokenDir, SocketDir: spec.SocketDir, StateDir: spec.StateDir,
	}
}

// vmRecord names the processes of one start: the VMM (QEMU, or the
// libkrun runner) and, for QEMU, its virtiofsd.
type vmRecord struct {
	Backend    string    `json:"backend"`
	InstanceID string    `json:"instance_id"`
	StartedAt  time.Time `json:"started_at"`
	VMM        process   `json:"vmm"`
	Virtiofsd  process   `json:"virtiofsd"` // zero for libkrun
	Accel      string    `json:"accel,omitempty"`
}

// exitRecord is how the VMM of one start ended, when this gateway process
// was its parent.
type exitRecord struct {
	VMM      process   `json:"vmm"`
	Code     int       `json:"code"`
	ExitedAt time.Time `json:"exited_at"`
}

// writeJSONAtomic writes v to path (0600) through a temporary file renamed
// over it. No fsync: after a host crash no recorded process runs.
func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFileAtomic(path, data)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readJSON decodes path into v; a missing file matches fs.ErrNotExist.
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func readVMRecord(dir string) (vmRecord, error) {
	var r vmRecord
	err := readJSON(filepath.Join(dir, vmFile), &r)
	return r, err
}

func readSpecRecord(dir string) (specRecord, error) {
	var r specRecord
	err := readJSON(filepath.Join(dir, specFile), &r)
	return r, err
}

func readExitRecord(dir string) (exitRecord, error) {
	var r exitRecord
	err := readJSON(filepath.Join(dir, exitFile), &r)
	return r, err
}

// makePrivateDir creates dir (and parents) and makes it 0700.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

func (d *Driver) indexPath(id string) string { return filepath.Join(d.stateRoot, indexDir, id) }

// link points the index entry of id at stateDir.
func (d *Driver) link(id, stateDir string) error {
	entry := d.indexPath(id)
	if entry == stateDir {
		return nil
	}
	if target, err := os.Readlink(entry); err == nil && target == stateDir {
		return nil
	}
	tmp := filepath.Join(filepath.Dir(entry), "."+id+".link")
	os.Remove(tmp)
	if err := os.Symlink(stateDir, tmp); err != nil {
		return fmt.Errorf("link %s -> %s: %w", tmp, stateDir, err)
	}
	if err := os.Rename(tmp, entry); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s -> %s: %w", entry, stateDir, err)
	}
	return nil
}

// errNoState says the driver holds no state directory for a sandbox.
var errNoState = errors.New("no state directory")

// lookup finds the state directory of id through the index.
func (d *Driver) lookup(id string) (string, error) {
	entry := d.indexPath(id)
	fi, err := os.Lstat(entry)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errNoState
	}
	if err != nil {
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	}
	dir := entry
	if fi.Mode()&fs.ModeSymlink != 0 {
		if dir, err = os.Readlink(entry); err != nil {
			return "", fmt.Errorf("look up sandbox %s: %w", id, err)
		}
	}
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return "", errNoState
	case err != nil:
		return "", fmt.Errorf("look up sandbox %s: %w", id, err)
	case !fi.IsDir():
		return "", fmt.Errorf("look up sandbox %s: %s is not a directory", id, dir)
	}
	return dir, nil
}
