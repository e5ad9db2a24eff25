package vm

import (
	"time"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// The files of a sandbox's state directory (see the package doc).
const (
	specFile       = statedir.SpecFile // the spec record, written by Create
	vmFile         = "vm.json"         // vmRecord of the current or last start
	exitFile       = "exit.json"       // exitRecord of the last start's VMM, once reaped here
	consoleLog     = "console.log"     // the guest's console, this start
	consoleLogPrev = "console.log.1"   // the guest's console, the start before
	vmmLog         = "vmm.log"         // QEMU's or the libkrun runner's own output, appended
	virtiofsdLog   = "virtiofsd.log"   // virtiofsd's output, appended
	socatLog       = "socat.log"       // the session bridges' errors, appended
	initrdFile     = "initrd.img"      // the image's initramfs plus this start's boot archive
	fsSocket       = "vfs.sock"        // virtiofsd's vhost-user socket
	ctlSocket      = "ctl.sock"        // QEMU's end of the guest's stop port
	krunFile       = "krun.json"       // the libkrun runner's VM description
	rootfsDir      = "rootfs"          // libkrun: this sandbox's copy of the image's root
)

// vmRecord names the processes of one start: the VMM (QEMU, or the
// libkrun runner) and, for QEMU, its virtiofsd.
type vmRecord struct {
	Backend    string           `json:"backend"`
	InstanceID string           `json:"instance_id"`
	StartedAt  time.Time        `json:"started_at"`
	VMM        hostproc.Process `json:"vmm"`
	Virtiofsd  hostproc.Process `json:"virtiofsd"` // zero for libkrun
	Accel      string           `json:"accel,omitempty"`
}

// exitRecord is how the VMM of one start ended, when this gateway process
// was its parent.
type exitRecord struct {
	VMM      hostproc.Process `json:"vmm"`
	Code     int              `json:"code"`
	ExitedAt time.Time        `json:"exited_at"`
}

func readVMRecord(dir string) (vmRecord, error) { return statedir.ReadRecord[vmRecord](dir, vmFile) }

func readExitRecord(dir string) (exitRecord, error) {
	return statedir.ReadRecord[exitRecord](dir, exitFile)
}
