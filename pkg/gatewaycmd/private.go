package gatewaycmd

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// keepMemoryPrivate makes the gateway's process not dumpable. Its memory
// holds every sandbox's newest token and the signing keys: a core dump
// would write them to a disk, and any other process of the gateway's user
// could read them (ptrace, /proc/<pid>/mem), a process driver's sandbox
// among them. Once it is not dumpable, no core dump is written, only
// CAP_SYS_PTRACE may trace or read it, and its /proc/<pid> belongs to
// root. Its children (supervisors, QEMU, virtiofsd) are dumpable again
// once they exec.
func keepMemoryPrivate() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
