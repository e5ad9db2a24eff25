package hostproc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stat    string
		want    Stat
		wantErr bool
	}{
		{
			name: "plain command",
			stat: "4242 (sleep) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 5000000 100 18446744073709551615",
			want: Stat{State: 'S', PPID: 1, Session: 4242, StartTicks: 987654},
		},
		{
			name: "command with spaces and parentheses",
			stat: "7 (a) (b c)) Z 3 7 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0",
			want: Stat{State: 'Z', PPID: 3, Session: 5, StartTicks: 123},
		},
		{name: "no command", stat: "7 S 1 7 7", wantErr: true},
		{name: "truncated", stat: "7 (x) S 1 7 7 0 -1", wantErr: true},
		{name: "start time not a number", stat: "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.stat))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestReadStatOfMissingPidMatchesErrNotExist(t *testing.T) {
	// Pids are at most 2^22 on Linux, so this one never exists.
	if _, err := ReadStat(1 << 23); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadStat of a missing pid = %v, want fs.ErrNotExist", err)
	}
}

func TestObserveTellsAliveFromRecycled(t *testing.T) {
	self, err := Identify(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if state, ppid := self.Observe(); state != Alive || ppid != os.Getppid() {
		t.Errorf("this process observed %v with parent %d, want alive with parent %d", state, ppid, os.Getppid())
	}
	recycled := Process{PID: self.PID, StartTicks: self.StartTicks + 1}
	if state, _ := recycled.Observe(); state != Gone || recycled.Alive() {
		t.Errorf("this pid with another start time observed %v, want gone", state)
	}
	if state, _ := (Process{}).Observe(); state != Gone {
		t.Errorf("the zero Process observed %v, want gone", state)
	}
}

// startSession runs `sh -c script` as the leader of a new session and
// returns it; the test reaps it.
func startSession(t *testing.T, script string) (Process, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := Identify(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.KillSession(time.Second)
		cmd.Wait()
	})
	return p, cmd
}

func TestObserveSeesZombieUntilReaped(t *testing.T) {
	p, cmd := startSession(t, "exit 3")
	deadline := time.Now().Add(5 * time.Second)
	for {
		state, ppid := p.Observe()
		if state == Zombie {
			if ppid != os.Getpid() {
				t.Errorf("zombie's parent = %d, want this process %d", ppid, os.Getpid())
			}
			break
		}
		if state != Alive || time.Now().After(deadline) {
			t.Fatalf("unreaped child observed %v, want alive then zombie", state)
		}
		time.Sleep(time.Millisecond)
	}
	if p.Alive() {
		t.Error("a zombie reads as alive")
	}
	cmd.Wait()
	if state, _ := p.Observe(); state != Gone {
		t.Errorf("reaped child observed %v, want gone", state)
	}
}

func TestKillSessionEndsMembersThatIgnoreSIGTERM(t *testing.T) {
	// The leader starts a member in the background and waits for it; both
	// ignore SIGTERM, so only SIGKILL ends them.
	p, cmd := startSession(t, "trap '' TERM; sleep 60 & wait")
	deadline := time.Now().Add(5 * time.Second)
	for {
		members, err := SessionMembers(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		if len(members) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d members %v, want the leader and its sleep", p.PID, members)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.SignalGroup(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.KillSession(5 * time.Second); err != nil {
		t.Fatalf("KillSession = %v", err)
	}
	if members, err := SessionMembers(p.PID); err != nil || len(members) != 0 {
		t.Errorf("after KillSession, session %d members %v (%v), want none", p.PID, members, err)
	}
	cmd.Wait()
	if p.Alive() {
		t.Error("session leader alive after KillSession")
	}
}

func TestSignalSparesRecycledPid(t *testing.T) {
	p, cmd := startSession(t, "sleep 60")
	stranger := Process{PID: p.PID, StartTicks: p.StartTicks + 1}
	if err := stranger.Signal(unix.SIGKILL); err != nil {
		t.Fatalf("Signal to a recycled pid = %v, want nil", err)
	}
	time.Sleep(20 * time.Millisecond)
	if !p.Alive() {
		t.Fatal("Signal to another start time of the pid killed the process running under it")
	}
	if err := p.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("the signalled process exited cleanly, want killed")
	}
}

func TestRefusesToSignalInitOrEveryone(t *testing.T) {
	for _, pid := range []int{-1, 0, 1} {
		p := Process{PID: pid}
		if err := p.SignalGroup(unix.Signal(0)); err == nil {
			t.Errorf("SignalGroup for pid %d = nil, want a refusal", pid)
		}
		if err := p.KillSession(time.Millisecond); err == nil {
			t.Errorf("KillSession for pid %d = nil, want a refusal", pid)
		}
	}
}

func TestExitCodeIsWhatAShellReports(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -TERM $$", 128 + int(unix.SIGTERM)},
		{"kill -KILL $$", 128 + int(unix.SIGKILL)},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		cmd.Run()
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok {
			t.Fatalf("%q: no wait status", tc.script)
		}
		if got := ExitCode(unix.WaitStatus(ws)); got != tc.want {
			t.Errorf("%q: ExitCode = %d, want %d", tc.script, got, tc.want)
		}
	}
}
