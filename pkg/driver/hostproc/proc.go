package hostproc

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

// Process names one host process for its whole life: a pid alone may be
// recycled by the kernel, but no two processes share a pid and a start time.
type Process struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"` // field 22 of /proc/<pid>/stat: start after boot, in clock ticks
}

// Stat is what the drivers read from /proc/<pid>/stat.
type Stat struct {
	State      byte   // field 3: R, S, D, T, Z, X, ...
	PPID       int    // field 4
	Session    int    // field 6: the session id, kept across reparenting
	StartTicks uint64 // field 22
}

// Ended reports whether the process has ended (a zombie, or dead).
func (s Stat) Ended() bool { return s.State == 'Z' || s.State == 'X' }

// ReadStat reads /proc/<pid>/stat. A pid that does not exist yields an
// error matching fs.ErrNotExist.
func ReadStat(pid int) (Stat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		// A process that ends while we read it yields ESRCH, not ENOENT.
		if errors.Is(err, unix.ESRCH) {
			err = fs.ErrNotExist
		}
		return Stat{}, fmt.Errorf("read %s: %w", path, err)
	}
	st, err := ParseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return st, nil
}

// ParseStat parses the text of /proc/<pid>/stat. The command name (field
// 2) is in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return Stat{}, errors.New("no ')' closing the command name")
	}
	fields := strings.Fields(string(b[end+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	const startTimeField = 22
	if len(fields) <= startTimeField-3 || len(fields[0]) != 1 {
		return Stat{}, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), startTimeField-2)
	}
	ppid, err := strconv.Atoi(fields[4-3])
	if err != nil {
		return Stat{}, fmt.Errorf("field 4 (ppid): %w", err)
	}
	session, err := strconv.Atoi(fields[6-3])
	if err != nil {
		return Stat{}, fmt.Errorf("field 6 (session): %w", err)
	}
	ticks, err := strconv.ParseUint(fields[startTimeField-3], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("field 22 (starttime): %w", err)
	}
	return Stat{State: fields[0][0], PPID: ppid, Session: session, StartTicks: ticks}, nil
}

// Identify returns the Process that pid is now.
func Identify(pid int) (Process, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return Process{}, err
	}
	return Process{PID: pid, StartTicks: st.StartTicks}, nil
}

// Liveness is what /proc says of a recorded Process.
type Liveness int

const (
	// Gone: no process with that pid and start time exists (it ended and
	// was reaped, or the pid now belongs to another process).
	Gone Liveness = iota
	// Zombie: it ended and awaits its parent's wait; it runs no code.
	Zombie
	// Alive: it runs (or is stopped by a signal, which is still running).
	Alive
)

func (l Liveness) String() string {
	switch l {
	case Gone:
		return "gone"
	case Zombie:
		return "zombie"
	case Alive:
		return "alive"
	}
	return "liveness(" + strconv.Itoa(int(l)) + ")"
}

// Observe reports the liveness of p and, unless it is Gone, its parent's pid.
func (p Process) Observe() (Liveness, int) {
	if p.PID <= 0 {
		return Gone, 0
	}
	st, err := ReadStat(p.PID)
	if err != nil || st.StartTicks != p.StartTicks {
		return Gone, 0
	}
	if st.Ended() {
		return Zombie, st.PPID
	}
	return Alive, st.PPID
}

// Alive reports whether p still runs: same pid, same start time, not ended.
func (p Process) Alive() bool {
	l, _ := p.Observe()
	return l == Alive
}

// Signal sends sig to p if it is still p. A process that ends meanwhile is
// not an error.
func (p Process) Signal(sig unix.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := unix.Kill(p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to pid %d: %w", unix.SignalName(sig), p.PID, err)
	}
	return nil
}

// SignalGroup sends sig to the process group p leads (it was started with
// Setpgid or Setsid). A group that no longer exists is not an error.
func (p Process) SignalGroup(sig unix.Signal) error {
	if p.PID <= 1 {
		return fmt.Errorf("refuse to signal process group %d", p.PID)
	}
	if err := unix.Kill(-p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to process group %d: %w", unix.SignalName(sig), p.PID, err)
	}
	return nil
}

// sessionPoll is how often KillSession looks again at a session it killed.
const sessionPoll = 10 * time.Millisecond

// KillSession sends SIGKILL to every live process of the session p leads,
// again and again until none is left or timeout passes: a process can fork
// while the list is read, and a killed one shows in /proc until it ends.
// The session outlives its leader while a member lives, so its id cannot
// name another session meanwhile.
func (p Process) KillSession(timeout time.Duration) error {
	if p.PID <= 1 {
		return fmt.Errorf("refuse to kill session %d", p.PID)
	}
	deadline := time.Now().Add(timeout)
	for {
		members, err := SessionMembers(p.PID)
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

// SessionMembers lists the live processes of session sid, the calling
// process never included.
func SessionMembers(sid int) ([]int, error) {
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
		st, err := ReadStat(pid)
		if err != nil || st.Session != sid || st.Ended() {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// ExitCode converts a wait status into the code a shell reports: the exit
// status, or 128 plus the signal number for a process a signal killed.
func ExitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
