package workload

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit is how a child process ended.
type Exit struct {
	// Code is the exit status, or 128 plus the signal number when a signal
	// killed the process (the shells' convention, and the supervisor's own
	// exit code).
	Code int
	// Signal is the signal that killed the process, or 0 when it exited.
	Signal syscall.Signal
}

// String reads "exit 3" or "killed by terminated (exit 143)".
func (e Exit) String() string {
	if e.Signal != 0 {
		return fmt.Sprintf("killed by %v (exit %d)", e.Signal, e.Code)
	}
	return fmt.Sprintf("exit %d", e.Code)
}

// exitFromStatus converts a wait4 status of a terminated process.
func exitFromStatus(ws unix.WaitStatus) Exit {
	if ws.Signaled() {
		sig := syscall.Signal(ws.Signal())
		return Exit{Code: 128 + int(sig), Signal: sig}
	}
	return Exit{Code: ws.ExitStatus()}
}
