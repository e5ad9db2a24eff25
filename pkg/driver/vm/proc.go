package vm

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

// process names one host process for its whole life: the kernel recycles
// pids, but no two processes share a pid and a start time.
type process struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"` // field 22 of /proc/<pid>/stat
}

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	State      byte // field 3
	PPID       int  // field 4
	Session    int  // field 6
	StartTicks uint64
}

// identify returns the process that pid is now.
func identify(pid int) (process, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return process{}, err
	}
	return process{PID: pid, StartTicks: st.StartTicks}, nil
}

func readProcStat(pid int) (procStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			err = fs.ErrNotExist
		}
		return procStat{}, fmt.Errorf("read %s: %w", path, err)
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// the fields from the last ')'.
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("parse %s: no ')'", path)
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("parse %s: %d fields after the command name", path, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	sid, err2 := strconv.Atoi(f[3])
	ticks, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return procStat{State: f[0][0], PPID: ppid, Session: sid, StartTicks: ticks}, nil
}

// alive reports whether p still runs: same pid, same start time, not a
// zombie.
func (p process) alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := readProcStat(p.PID)
	return err == nil && st.StartTicks == p.StartTicks && st.State != 'Z' && st.State != 'X'
}

// signal sends sig to p if it is still p.
func (p process) signal(sig unix.Signal) error {
	if !p.alive() {
		return nil
	}
	if err := unix.Kill(p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to pid %d: %w", unix.SignalName(sig), p.PID, err)
	}
	return nil
}

// sessionPoll is how often killSession looks again at a session it killed.
const sessionPoll = 10 * time.Millisecond

// killSession sends SIGKILL to every live process of the session p leads
// (QEMU with its socat bridges, or virtiofsd with its sandboxed server)
// until none is left or timeout passes. The session outlives its leader
// while a member lives, so its id cannot name another session meanwhile.
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
				return fmt.Errorf("kill session %d: pid %d: %w", p.PID, pid, err)
			}
		}
		time.Sleep(sessionPoll)
	}
}

// sessionMembers lists the live processes of session sid, never this one.
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
		if err != nil || st.Session != sid || st.State == 'Z' || st.State == 'X' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// processesWithArg lists the live processes one of whose arguments is arg,
// never this one.
func processesWithArg(arg string) []process {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(data), "\x00") {
			if a == arg {
				if p, err := identify(pid); err == nil && p.alive() {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}
