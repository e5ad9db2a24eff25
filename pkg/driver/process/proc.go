package process

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// process identifies one process for its whole life: a pid alone may be
// recycled by the kernel, but no two processes share a pid and a start time.
type process struct {
	PID        int
	StartTicks uint64 // field 22 of /proc/<pid>/stat: start after boot, in clock ticks
}

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	State      byte   // field 3: R, S, D, T, Z, X, ...
	PPID       int    // field 4
	Session    int    // field 6: the session id, kept across reparenting
	StartTicks uint64 // field 22
}

// readProcStat reads /proc/<pid>/stat. A pid that does not exist yields an
// error matching fs.ErrNotExist.
func readProcStat(pid int) (procStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		// A process that ends while we read it yields ESRCH, not ENOENT.
		if errors.Is(err, unix.ESRCH) {
			err = fs.ErrNotExist
		}
		return procStat{}, fmt.Errorf("read %s: %w", path, err)
	}
	st, err := parseProcStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return st, nil
}

// parseProcStat parses the text of /proc/<pid>/stat. The command name
// (field 2) is in parentheses and may itself hold spaces and parentheses,
// so the fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, errors.New("no ')' closing the command name")
	}
	fields := strings.Fields(string(b[end+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	const startTimeField = 22
	if len(fields) <= startTimeField-3 || len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), startTimeField-2)
	}
	ppid, err := strconv.Atoi(fields[4-3])
	if err != nil {
		return procStat{}, fmt.Errorf("field 4 (ppid): %w", err)
	}
	session, err := strconv.Atoi(fields[6-3])
	if err != nil {
		return procStat{}, fmt.Errorf("field 6 (session): %w", err)
	}
	ticks, err := strconv.ParseUint(fields[startTimeField-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("field 22 (starttime): %w", err)
	}
	return procStat{State: fields[0][0], PPID: ppid, Session: session, StartTicks: ticks}, nil
}

// liveness is what /proc says of a recorded process.
type liveness int

const (
	// gone: no process with that pid and start time exists (it ended and
	// was reaped, or the pid now belongs to another process).
	gone liveness = iota
	// zombie: it ended and awaits its parent's wait; it runs no code.
	zombie
	// alive: it runs (or is stopped by a signal, which is still running).
	alive
)

// observe reports the liveness of p and its parent's pid.
func (p process) observe() (liveness, int) {
	st, err := readProcStat(p.PID)
	if err != nil || st.StartTicks != p.StartTicks {
		return gone, 0
	}
	if ended(st) {
		return zombie, st.PPID
	}
	return alive, st.PPID
}

// ended reports whether a process in state s has ended.
func ended(s procStat) bool { return s.State == 'Z' || s.State == 'X' }

// signalGroup sends sig to p's process group, which p leads (the driver
// starts every supervisor with Setpgid). A group that no longer exists is
// not an error.
func (p process) signalGroup(sig unix.Signal) error {
	if p.PID <= 1 {
		return fmt.Errorf("refuse to signal process group %d", p.PID)
	}
	if err := unix.Kill(-p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to process group %d: %w", unix.SignalName(sig), p.PID, err)
	}
	return nil
}

// sessionPoll is how often killSession looks again at a session it killed.
const sessionPoll = 10 * time.Millisecond

// killSession sends SIGKILL to every live process of the session p leads,
// again and again until none is left or timeout passes: a process can fork
// while the list is read, and a killed one shows in /proc until it ends.
// The session, unlike a process group, holds the supervisor's workload
// too (the supervisor runs it in a process group of its own), and keeps
// holding orphans after the supervisor ends.
func (p process) killSession(timeout time.Duration) error {
	if p.PID <= 1 {
		return fmt.Errorf("refuse to kill session %d", p.PID)
	}
	deadline := time.Now().Add(timeout)
	for {
		members, err := sessionMembers(p.PID)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill session %d: pids %v still run %s after SIGKILL", p.PID, members, timeout)
		}
		for _, pid := range members {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill session %d: send SIGKILL to pid %d: %w", p.PID, pid, err)
			}
		}
		time.Sleep(sessionPoll)
	}
}

// sessionMembers lists the live processes of session sid, this process
// never included.
func sessionMembers(sid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list session %d: %w", sid, err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.Session != sid || ended(st) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// exitCode converts a wait status into the code a shell reports: the exit
// status, or 128 plus the signal number for a process a signal killed.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
