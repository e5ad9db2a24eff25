package process

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/drivertest"
	"github.com/sandkey/sandkey/pkg/driver/hostproc"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
	"github.com/sandkey/sandkey/pkg/guest"
)

func TestConformance(t *testing.T) {
	drivertest.Run(t,
		func(t *testing.T) driver.Driver { return newTestDriver(t, "") },
		func(t *testing.T) driver.Spec { spec, _ := newTestSpec(t, "serve"); return spec })
}

func TestNewRefusesUnusableSupervisorNamingIt(t *testing.T) {
	dir := t.TempDir()
	notExecutable := filepath.Join(dir, "supervisor.txt")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"unset", "", "no supervisor path"},
		{"missing", filepath.Join(dir, "no-such-supervisor"), filepath.Join(dir, "no-such-supervisor")},
		{"directory", dir, dir + " is not a regular file"},
		{"not executable", notExecutable, notExecutable + " is not executable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(Config{SupervisorPath: tc.path, StateRoot: t.TempDir()})
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestNewRefusesMissingStateRoot(t *testing.T) {
	if d, err := New(Config{SupervisorPath: testBinary(t)}); err == nil {
		d.Close()
		t.Fatal("New without a state root succeeded")
	}
}

func TestSupervisorGetsEnvironmentContract(t *testing.T) {
	for _, tc := range []struct {
		name     string
		userEnv  map[string]string
		wantPath string
		wantHome string
	}{
		{"defaults PATH and HOME", map[string]string{}, defaultPath, defaultHome},
		{"keeps user PATH and HOME", map[string]string{"PATH": "/opt/bin", "HOME": "/home/u"}, "/opt/bin", "/home/u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDriver(t, "")
			spec, report := newTestSpec(t, "serve", "an arg", "--flag")
			for k, v := range tc.userEnv {
				spec.Env[k] = v
			}
			spec.Env["FOO"] = "bar"
			// Reserved names the user must not set, in any case.
			spec.Env[guest.EnvTokenDir] = "/elsewhere"
			spec.Env["sandkey_gateway"] = "unix:///other.sock"
			spec.Env[guest.EnvSandboxID] = "someone-else"
			spec.Env["SANDKEY_EXTRA"] = "x"
			// The container default, which this driver must override.
			spec.SandboxEnv[guest.EnvTokenDir] = guest.DefaultTokenDir

			r := startSandbox(t, d, spec, report)
			defer d.Stop(ctxT(t), spec.SandboxID, time.Second)

			want := []string{
				"FOO=bar",
				"GORACE=" + noExitSleep,
				"HOME=" + tc.wantHome,
				"PATH=" + tc.wantPath,
				roleEnv + "=supervisor",
				reportEnv + "=" + report,
				guest.EnvAuthMode + "=dir",
				guest.EnvGateway + "=unix://" + filepath.Join(spec.SocketDir, "gw.sock"),
				guest.EnvInstanceID + "=" + spec.InstanceID,
				guest.EnvSandboxID + "=" + spec.SandboxID,
				guest.EnvStatusFile + "=" + filepath.Join(spec.StateDir, StatusFileName),
				guest.EnvTokenDir + "=" + spec.TokenDir,
			}
			slices.Sort(want)
			got := slices.Sorted(slices.Values(r.Env))
			if !slices.Equal(got, want) {
				t.Errorf("supervisor environment:\n got %q\nwant %q", got, want)
			}
			if wantArgs := []string{"--", "serve", "an arg", "--flag"}; !slices.Equal(r.Args, wantArgs) {
				t.Errorf("supervisor args = %q, want %q", r.Args, wantArgs)
			}
			if r.Dir != "/" {
				t.Errorf("supervisor runs in %s, want /", r.Dir)
			}
			if r.Session != r.PID {
				t.Errorf("supervisor pid %d is in session %d, want a session of its own", r.PID, r.Session)
			}
		})
	}
}

func TestStopEndsSupervisorThatHonoursSIGTERM(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "serve")
	r := startSandbox(t, d, spec, report)
	ticks := startTicks(t, r.PID)

	if err := d.Stop(ctxT(t), spec.SandboxID, time.Minute); err != nil {
		t.Fatal(err)
	}
	st := status(t, d, spec.SandboxID)
	if st.State != driver.StateStopped || !st.Exited || st.ExitCode != 0 {
		t.Errorf("after Stop: %+v, want stopped with exit code 0 (ended by its SIGTERM handler)", st)
	}
	if !processEnded(r.PID, ticks) {
		t.Errorf("supervisor pid %d still runs after Stop", r.PID)
	}
}

func TestStopKillsSupervisorIgnoringSIGTERMAfterGrace(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "ignore-term")
	r := startSandbox(t, d, spec, report)
	ticks := startTicks(t, r.PID)

	const grace = 300 * time.Millisecond
	begin := time.Now()
	if err := d.Stop(ctxT(t), spec.SandboxID, grace); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Stop returned after %s, before the grace of %s", took, grace)
	}
	st := status(t, d, spec.SandboxID)
	if st.State != driver.StateStopped || !st.Exited || st.ExitCode != 128+int(unix.SIGKILL) {
		t.Errorf("after Stop: %+v, want stopped with exit code 137 (SIGKILL)", st)
	}
	if !processEnded(r.PID, ticks) {
		t.Errorf("supervisor pid %d still runs after Stop", r.PID)
	}
}

// The real supervisor runs its workload in a process group of its own; a
// workload that ignores SIGTERM and outlives its supervisor must not
// outlive Stop.
func TestStopKillsWorkloadInItsOwnProcessGroup(t *testing.T) {
	// Made a subreaper, this test inherits the orphaned workload and can
	// reap it, and so see how it ended.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "spawn")
	startSandbox(t, d, spec, report)
	workload := readReport(t, report+".grandchild")
	if workload.Session == workload.PID {
		t.Fatalf("stand-in workload leads session %d; want it in the supervisor's", workload.Session)
	}

	if err := d.Stop(ctxT(t), spec.SandboxID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(workload.PID, &ws, unix.WNOHANG, nil)
		if err != nil {
			t.Fatalf("reap workload pid %d: %v", workload.PID, err)
		}
		if pid == workload.PID {
			if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Errorf("workload ended with status %#x, want killed by SIGKILL", ws)
			}
			return
		}
		if time.Now().After(deadline) {
			unix.Kill(workload.PID, unix.SIGKILL)
			unix.Wait4(workload.PID, &ws, 0, nil)
			t.Fatalf("workload pid %d still ran %s after Stop", workload.PID, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStatusReportsSupervisorExitCode(t *testing.T) {
	for _, code := range []string{"0", "3", "42"} {
		t.Run(code, func(t *testing.T) {
			d := newTestDriver(t, "")
			spec, report := newTestSpec(t, "exit", code)
			startSandbox(t, d, spec, report)
			st := waitStopped(t, d, spec.SandboxID)
			if !st.Exited || st.InstanceID != spec.InstanceID || st.Detail == "" {
				t.Fatalf("Status = %+v, want an exit of instance %s", st, spec.InstanceID)
			}
			if got := strconv.Itoa(st.ExitCode); got != code {
				t.Errorf("exit code %s, want %s", got, code)
			}
			if err := d.Stop(ctxT(t), spec.SandboxID, time.Second); err != nil {
				t.Errorf("Stop of an exited sandbox: %v", err)
			}
		})
	}
}

// The gateway dies and a new one starts: the sandbox keeps running, is no
// child of the new gateway, and the new gateway finds it through its pid
// record, reports it running, and stops it by polling /proc.
func TestRestartedGatewayFindsAndStopsOrphanedSandbox(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		grace time.Duration
	}{
		{"serve", time.Minute},
		{"ignore-term", 200 * time.Millisecond},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			stateRoot := t.TempDir()
			spec, report := newTestSpec(t, tc.mode)
			specFile := filepath.Join(t.TempDir(), "spec.json")
			if err := statedir.WriteJSON(specFile, spec); err != nil {
				t.Fatal(err)
			}
			initProc := startStandInInit(t, stateRoot, specFile)
			r := readReport(t, report)

			d := newTestDriver(t, stateRoot)
			st := status(t, d, spec.SandboxID)
			if st.State != driver.StateRunning || st.InstanceID != spec.InstanceID {
				t.Fatalf("Status after gateway restart = %+v, want running instance %s", st, spec.InstanceID)
			}
			if ps, err := hostproc.ReadStat(r.PID); err != nil || ps.PPID == os.Getpid() {
				t.Fatalf("sandbox pid %d: parent %d (%v); want it no child of this process", r.PID, ps.PPID, err)
			}
			ticks := startTicks(t, r.PID)

			if err := d.Stop(ctxT(t), spec.SandboxID, tc.grace); err != nil {
				t.Fatal(err)
			}
			if !processEnded(r.PID, ticks) {
				t.Errorf("supervisor pid %d still runs after Stop", r.PID)
			}
			st = status(t, d, spec.SandboxID)
			if st.State != driver.StateStopped || st.Exited {
				t.Errorf("Status after Stop = %+v, want stopped with the exit status unknown", st)
			}
			if err := waitProcess(initProc); err != nil {
				t.Errorf("stand-in init: %v", err)
			}
		})
	}
}

// startStandInInit runs a stand-in init that runs a stand-in gateway that
// starts specFile's sandbox on stateRoot and exits. It returns once the
// gateway has exited.
func startStandInInit(t *testing.T, stateRoot, specFile string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testBinary(t), stateRoot, specFile)
	cmd.Env = append(os.Environ(), roleEnv+"=init", "GORACE="+noExitSleep)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("stand-in init said %q (%v), want ready", line, err)
	}
	return cmd
}

// waitProcess waits for cmd to exit, killing it after waitTimeout.
func waitProcess(cmd *exec.Cmd) error {
	timer := time.AfterFunc(waitTimeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	return cmd.Wait()
}

// A gateway process that closes its Driver and opens another one (or
// re-executes itself) is still the supervisor's parent: the new Driver
// must collect the exit, or the supervisor stays a zombie.
func TestReopenedDriverCollectsExitOfItsOwnChild(t *testing.T) {
	stateRoot := t.TempDir()
	first := newTestDriver(t, stateRoot)
	spec, report := newTestSpec(t, "serve")
	startSandbox(t, first, spec, report)
	first.Close()

	second := newTestDriver(t, stateRoot)
	if st := status(t, second, spec.SandboxID); st.State != driver.StateRunning {
		t.Fatalf("Status = %+v, want running", st)
	}
	if err := second.Stop(ctxT(t), spec.SandboxID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if st := status(t, second, spec.SandboxID); st.State != driver.StateStopped || !st.Exited || st.ExitCode != 0 {
		t.Errorf("Status after Stop = %+v, want stopped with exit code 0", st)
	}
}

// A recorded pid now used by another process (here, this test's) must read
// as stopped and never be signalled.
func TestRecycledPIDReadsAsStoppedAndIsNotSignalled(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "serve")
	if err := d.Create(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	recycled := pidRecord{startRecord: startRecord{PID: os.Getpid(), StartTicks: startTicks(t, os.Getpid()) + 1, InstanceID: "old"}}
	if err := statedir.WriteJSON(filepath.Join(spec.StateDir, pidFile), recycled); err != nil {
		t.Fatal(err)
	}
	if st := status(t, d, spec.SandboxID); st.State != driver.StateStopped || st.Exited {
		t.Fatalf("Status = %+v, want stopped with the exit status unknown", st)
	}
	// Were this process signalled, the test binary would die here.
	if err := d.Stop(ctxT(t), spec.SandboxID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctxT(t), spec); err != nil {
		t.Fatalf("Start over a recycled pid: %v", err)
	}
	readReport(t, report)
	if st := status(t, d, spec.SandboxID); st.State != driver.StateRunning || st.InstanceID != spec.InstanceID {
		t.Errorf("Status = %+v, want running instance %s", st, spec.InstanceID)
	}
	if err := d.Delete(ctxT(t), spec.SandboxID); err != nil {
		t.Fatal(err)
	}
}

func TestStartOfRunningSandboxFailsAndKeepsIt(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "serve")
	r := startSandbox(t, d, spec, report)
	defer d.Stop(ctxT(t), spec.SandboxID, time.Second)

	again := spec
	again.InstanceID = "another"
	if err := d.Start(ctxT(t), again); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start = %v, want ErrAlreadyRunning", err)
	}
	rec, err := readPIDRecord(spec.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if rec.PID != r.PID || rec.InstanceID != spec.InstanceID {
		t.Errorf("pid record %+v after refused Start, want pid %d instance %s", rec, r.PID, spec.InstanceID)
	}
	if st := status(t, d, spec.SandboxID); st.State != driver.StateRunning || st.InstanceID != spec.InstanceID {
		t.Errorf("Status = %+v, want running instance %s", st, spec.InstanceID)
	}
}

func TestStateFilesArePrivateAndRecordTheStart(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "serve")
	spec.Env["SANDKEY_TOKEN"] = "user-supplied"
	spec.SandboxEnv[guest.EnvToken] = "raw-token-must-not-rest-on-disk"
	r := startSandbox(t, d, spec, report)
	defer d.Stop(ctxT(t), spec.SandboxID, time.Second)

	wantMode(t, spec.StateDir, 0o700)
	for _, f := range []string{specFile, pidFile, logFile} {
		wantMode(t, filepath.Join(spec.StateDir, f), 0o600)
	}
	rec, err := readPIDRecord(spec.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if rec.PID != r.PID || rec.StartTicks != startTicks(t, r.PID) || rec.InstanceID != spec.InstanceID {
		t.Errorf("pid record %+v, want pid %d with its start time, instance %s", rec, r.PID, spec.InstanceID)
	}
	raw, err := os.ReadFile(filepath.Join(spec.StateDir, specFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "SANDKEY_") || strings.Contains(string(raw), "raw-token") {
		t.Errorf("spec record holds SANDKEY_ variables: %s", raw)
	}
	if target, err := os.Readlink(d.sandboxes.Path(spec.SandboxID)); err != nil || target != spec.StateDir {
		t.Errorf("index entry -> %q (%v), want %s", target, err, spec.StateDir)
	}
}

func TestLogCollectsOutputAcrossStarts(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "serve")
	var pids []int
	for i := range 2 {
		os.Remove(report)
		r := startSandbox(t, d, spec, report)
		pids = append(pids, r.PID)
		if err := d.Stop(ctxT(t), spec.SandboxID, time.Minute); err != nil {
			t.Fatalf("Stop %d: %v", i, err)
		}
	}
	log, err := os.ReadFile(filepath.Join(spec.StateDir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		for _, line := range []string{"stand-in supervisor " + strconv.Itoa(pid) + ": serve", "stand-in supervisor " + strconv.Itoa(pid) + ": stderr"} {
			if !strings.Contains(string(log), line) {
				t.Errorf("log lacks %q:\n%s", line, log)
			}
		}
	}
}

func TestStartWithoutCommandRunsCommandRecordedByCreate(t *testing.T) {
	stateRoot := t.TempDir()
	d := newTestDriver(t, stateRoot)
	spec, report := newTestSpec(t, "serve", "recorded")
	if err := d.Create(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	// A gateway that lost the command (restarted) starts by ID and instance.
	d.Close()
	d = newTestDriver(t, stateRoot)
	bare := spec
	bare.Command, bare.Env = nil, nil
	if err := d.Start(ctxT(t), bare); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(ctxT(t), spec.SandboxID, time.Second)
	if r := readReport(t, report); !slices.Equal(r.Args, []string{"--", "serve", "recorded"}) {
		t.Errorf("supervisor args = %q, want the recorded command", r.Args)
	}
}

func TestDeleteStopsSandboxAndRemovesItsState(t *testing.T) {
	d := newTestDriver(t, "")
	spec, report := newTestSpec(t, "ignore-term")
	r := startSandbox(t, d, spec, report)
	ticks := startTicks(t, r.PID)
	d.deleteGrace = 100 * time.Millisecond

	if err := d.Delete(ctxT(t), spec.SandboxID); err != nil {
		t.Fatal(err)
	}
	if !processEnded(r.PID, ticks) {
		t.Errorf("supervisor pid %d still runs after Delete", r.PID)
	}
	for _, p := range []string{spec.StateDir, d.sandboxes.Path(spec.SandboxID)} {
		if !absent(p) {
			t.Errorf("%s still exists after Delete", p)
		}
	}
	if err := d.Delete(ctxT(t), spec.SandboxID); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if st := status(t, d, spec.SandboxID); st.State != driver.StateMissing {
		t.Errorf("Status after Delete = %+v, want missing", st)
	}
}

func TestStateDirMissingBehindDriversBackReadsAsMissing(t *testing.T) {
	d := newTestDriver(t, "")
	spec, _ := newTestSpec(t, "serve")
	if err := d.Create(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(spec.StateDir); err != nil {
		t.Fatal(err)
	}
	if st := status(t, d, spec.SandboxID); st.State != driver.StateMissing {
		t.Errorf("Status = %+v, want missing", st)
	}
	if err := d.Stop(ctxT(t), spec.SandboxID, time.Second); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Stop = %v, want driver.ErrNotFound", err)
	}
	if err := d.Delete(ctxT(t), spec.SandboxID); err != nil || !absent(d.sandboxes.Path(spec.SandboxID)) {
		t.Errorf("Delete = %v, index entry absent: %v; want the stale entry removed", err, absent(d.sandboxes.Path(spec.SandboxID)))
	}
}

func TestSpecWithoutStateDirLivesUnderStateRoot(t *testing.T) {
	stateRoot := t.TempDir()
	d := newTestDriver(t, stateRoot)
	spec, report := newTestSpec(t, "serve")
	spec.StateDir = ""
	want := filepath.Join(stateRoot, statedir.IndexDir, spec.SandboxID)
	endOnCleanup(t, want)
	startSandbox(t, d, spec, report)
	if _, err := readPIDRecord(want); err != nil {
		t.Fatalf("no pid record under the state root: %v", err)
	}
	if st := status(t, d, spec.SandboxID); st.State != driver.StateRunning {
		t.Errorf("Status = %+v, want running", st)
	}
	if err := d.Delete(ctxT(t), spec.SandboxID); err != nil {
		t.Fatal(err)
	}
	if !absent(want) {
		t.Errorf("%s still exists after Delete", want)
	}
}

func TestInvalidSpecIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*driver.Spec)
	}{
		{"empty ID", func(s *driver.Spec) { s.SandboxID = "" }},
		{"ID with slash", func(s *driver.Spec) { s.SandboxID = "a/b" }},
		{"ID escaping the index", func(s *driver.Spec) { s.SandboxID = ".." }},
		{"hidden ID", func(s *driver.Spec) { s.SandboxID = ".x" }},
		{"relative token dir", func(s *driver.Spec) { s.TokenDir = "auth" }},
		{"no socket dir", func(s *driver.Spec) { s.SocketDir = "" }},
		{"relative state dir", func(s *driver.Spec) { s.StateDir = "state" }},
		{"no command", func(s *driver.Spec) { s.Command = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDriver(t, "")
			spec, _ := newTestSpec(t, "serve")
			tc.mutate(&spec)
			if err := d.Create(ctxT(t), spec); err == nil {
				t.Errorf("Create of %+v succeeded", spec)
			}
			if err := d.Start(ctxT(t), spec); err == nil {
				t.Errorf("Start of %+v succeeded", spec)
			}
		})
	}
}

func TestClosedDriverRefusesOperations(t *testing.T) {
	d := newTestDriver(t, "")
	spec, _ := newTestSpec(t, "serve")
	d.Close()
	d.Close() // idempotent
	for name, err := range map[string]error{
		"Create": d.Create(ctxT(t), spec),
		"Start":  d.Start(ctxT(t), spec),
		"Stop":   d.Stop(ctxT(t), spec.SandboxID, time.Second),
		"Delete": d.Delete(ctxT(t), spec.SandboxID),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := d.Status(ctxT(t), spec.SandboxID); !errors.Is(err, ErrClosed) {
		t.Errorf("Status after Close = %v, want ErrClosed", err)
	}
}
