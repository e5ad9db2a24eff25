package vme2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
)

// Bounds the tests assert.
const (
	// pollInterval is the guest's directory poll on virtio-fs (1 s, as
	// pkg/auth/source picks for FUSE); pollMargin covers a TCG guest's
	// slowness and the console's latency.
	pollInterval = time.Second
	pollMargin   = 1500 * time.Millisecond
	// reconnectBound bounds a guest's return after a gateway restart that
	// kept it waiting two seconds: its backoff has not grown past ~3 s.
	reconnectBound = 15 * time.Second
	// gapBound bounds the first registration after a session cut: the
	// guest's backoff may have grown for the length of the cut.
	gapBound = 45 * time.Second
)

// The VM the token tests share: booted by the first that runs, left
// running and registered by each, deleted by TestMain.
var (
	sharedEnv *env
	sharedSB  gateway.Sandbox
)

// shared returns the shared VM's gateway and sandbox, booting it first if
// no test has, and waits until its supervisor is registered.
func shared(t *testing.T) (*env, gateway.Sandbox) {
	t.Helper()
	if sharedEnv == nil {
		e := newEnv(t, shortLifetime)
		start := time.Now()
		sb := e.create("shared", "sleep", "100000")
		took := eventually(t, bootBound, "the guest's supervisor registers", func() bool { return e.gw.Sessions().Connected(sb.ID) })
		t.Logf("boot to registered under TCG: %s (from Start: %s)", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if os.Getenv("VME2E_DEBUG") != "" {
			t.Logf("console:\n%s", e.console(sb.ID).tail())
		}
		sharedEnv, sharedSB = e, sb
	}
	sharedEnv.use(t)
	eventually(t, gapBound, "the shared guest is registered", func() bool { return sharedEnv.gw.Sessions().Connected(sharedSB.ID) })
	return sharedEnv, sharedSB
}

func closeShared() error {
	var err error
	if sharedEnv != nil {
		err = sharedEnv.destroy()
		sharedEnv = nil
	}
	return err
}

func (e *env) console(id string) *console {
	return newConsole(filepath.Join(e.driverDir(id), "console.log"))
}

func TestVMSupervisorRegistersAndRunsExecWithTheBootEnvironment(t *testing.T) {
	e, sb := shared(t)
	out, res := e.exec(sb.ID, "sh", "-c", `echo "id=$SANDKEY_SANDBOX_ID gw=$SANDKEY_GATEWAY dir=$SANDKEY_TOKEN_DIR"; cat /proc/cmdline`)
	if res.ExitCode != 0 {
		t.Fatalf("exec: %+v\n%s", res, out)
	}
	want := "id=" + sb.ID + " gw=tcp://10.0.2.100:1024 dir=" + guest.DefaultTokenDir
	if !strings.Contains(out, want) {
		t.Errorf("guest environment: %q, want %q", out, want)
	}
	// The environment came through the boot file, not the kernel command
	// line, which the host's process list shows.
	if strings.Contains(out, "SANDKEY_") || !strings.Contains(out, "sandkey.tag=") {
		t.Errorf("kernel command line %q: want the share's tag and no SANDKEY_ variable", out)
	}
	if _, res := e.exec(sb.ID, "sh", "-c", "exit 42"); res.ExitCode != 42 {
		t.Errorf("exec exit code = %d, want 42", res.ExitCode)
	}
}

func TestVMGuestCannotWriteTheTokenShareEvenAfterRemountingIt(t *testing.T) {
	e, sb := shared(t)
	dir := guest.DefaultTokenDir
	before := listDir(t, e.tokenDir(sb.ID))
	script := strings.Join([]string{
		"echo x > " + dir + "/evil; echo write=$?",
		"rm -f " + dir + "/token; echo rm=$?",
		"mount -o remount,rw " + dir + "; echo remount=$?",
		"echo x > " + dir + "/evil; echo write-after-remount=$?",
		"rm -f " + dir + "/token; echo rm-after-remount=$?",
		"mkdir " + dir + "/d; echo mkdir-after-remount=$?",
		"mount -o remount,ro " + dir,
	}, "; ")
	out, res := e.exec(sb.ID, "sh", "-c", script)
	if res.ExitCode != 0 {
		t.Fatalf("exec: %+v\n%s", res, out)
	}
	for _, want := range []string{"write=1", "rm=1", "remount=0", "write-after-remount=1", "rm-after-remount=1", "mkdir-after-remount=1"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "Read-only file system") {
		t.Errorf("guest writes did not fail as read-only:\n%s", out)
	}
	if after := listDir(t, e.tokenDir(sb.ID)); strings.Join(after, ",") != strings.Join(before, ",") {
		// The gateway may have rotated meanwhile; only the guest's names matter.
		for _, name := range after {
			if name == "evil" || name == "d" {
				t.Errorf("the guest created %s in the host's token directory", name)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(e.tokenDir(sb.ID), "token")); err != nil {
		t.Errorf("host token after the guest's rm: %v", err)
	}
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// blockSession cuts the guest's session and keeps it cut: the gateway's
// socket is renamed away, so the guest's forward finds nothing to connect
// to, and the socat bridge of the current connection (found by its
// arguments, which name the sandbox's socket: QEMU's user network starts
// it detached, in a session of its own) is killed by pid. It returns the function that restores the
// socket.
func blockSession(t testing.TB, e *env, id string) (restore func()) {
	t.Helper()
	sock := filepath.Join(e.socketDir(id), guest.SocketName)
	if err := os.Rename(sock, sock+".blocked"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if !restored {
			restored = true
			if err := os.Rename(sock+".blocked", sock); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	for _, pid := range processesWithArg(t, sock) {
		if commandOf(pid) == "socat" {
			signalAll(t, unix.SIGKILL, pid)
		}
	}
	eventually(t, 10*time.Second, "the gateway sees the session end", func() bool { return !e.gw.Sessions().Connected(id) })
	return restore
}

func TestVMRotationReachesGuestByPollingTheShareAloneWithinThePollInterval(t *testing.T) {
	e, sb := shared(t)
	c := e.console(sb.ID)
	restore := blockSession(t, e, sb.ID)

	mark := c.mark()
	rotated := time.Now()
	gen, err := e.gw.Rotate(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	line := c.waitFor(t, mark, pollInterval+pollMargin+5*time.Second, "the rotated token taken from the share", tokenAccepted(source.OriginDir, gen))
	latency := line.Seen.Sub(rotated)
	t.Logf("rotation to swap through the read-only share, session blocked: %s", latency.Round(time.Millisecond))
	if latency > pollInterval+pollMargin {
		t.Errorf("the guest took the rotated token %s after the rotation, want within the poll interval %s plus %s", latency, pollInterval, pollMargin)
	}
	if e.gw.Sessions().Connected(sb.ID) {
		t.Error("the session was not blocked: the guest is connected")
	}
	for _, l := range c.lines()[mark:] {
		if l.Msg == "session accepted" {
			t.Errorf("the guest registered while its session was blocked: %+v", l)
		}
	}

	restore()
	eventually(t, gapBound, "the guest registers again once unblocked", func() bool { return e.gw.Sessions().Connected(sb.ID) })
}

func TestVMGetsTheRotatedTokenAtRegistrationAfterAPushGapOverItsAttestedChannel(t *testing.T) {
	e, sb := shared(t)
	c := e.console(sb.ID)
	held := e.guestStatus(sb.ID)
	if held.Gen == 0 || held.TokenExpired {
		t.Fatalf("guest holds no valid token before the gap: %+v", held)
	}

	// Freeze the VM, and virtiofsd too, so that the guest cannot read the
	// directory when it wakes: the token can only come over the session.
	rec := e.vmRecord(sb.ID)
	fs := sessionOf(t, rec.Virtiofsd.PID)
	signalAll(t, unix.SIGSTOP, rec.VMM.PID)
	signalAll(t, unix.SIGSTOP, fs...)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			unix.Kill(rec.VMM.PID, unix.SIGCONT)
			for _, pid := range fs {
				unix.Kill(pid, unix.SIGCONT)
			}
		}
	}
	t.Cleanup(thaw)
	eventually(t, 10*time.Second, "the gateway ends the frozen guest's session", func() bool { return !e.gw.Sessions().Connected(sb.ID) })

	gen, err := e.gw.Rotate(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if wait := time.Until(held.ExpiresAt.Add(time.Second)); wait > 0 {
		t.Logf("waiting %s for the guest's token (gen %d) to expire", wait.Round(time.Millisecond), held.Gen)
		time.Sleep(wait)
	}
	mark := c.mark()
	signalAll(t, unix.SIGCONT, rec.VMM.PID) // virtiofsd stays frozen

	line := c.waitFor(t, mark, gapBound, "the token taken at registration", tokenAccepted(session.OriginSessionHello, gen))
	accepted, _, ok := c.find(mark, func(l guestLine) bool { return l.Msg == "session accepted" })
	if !ok || accepted.HeldGen != held.Gen || !accepted.Sent {
		t.Errorf("registration after the gap: %+v, want the expired gen %d held and a token sent", accepted, held.Gen)
	}
	for _, l := range c.lines()[mark:] {
		if l.Msg == "token accepted" && l.Origin == source.OriginDir {
			t.Errorf("the guest read the directory although virtiofsd was frozen: %+v", l)
		}
	}
	eventually(t, 10*time.Second, "the gateway records the delivery", func() bool { return e.get(sb.ID).DeliveredGen >= line.Gen })
	thaw()
	if st := e.guestStatus(sb.ID); st.Gen < gen || st.TokenExpired {
		t.Errorf("guest status after the gap: %+v, want gen >= %d, unexpired", st, gen)
	}
}

func TestVMReconnectsWithAValidTokenAfterAGatewayRestart(t *testing.T) {
	e, sb := shared(t)
	vmm := e.vmRecord(sb.ID).VMM.PID
	e.close()
	time.Sleep(2 * time.Second)
	if unix.Kill(vmm, 0) != nil {
		t.Fatal("the VM ended with the gateway")
	}
	reopened := time.Now()
	e.open()
	took := eventually(t, reconnectBound, "the guest reconnects to the restarted gateway", func() bool { return e.gw.Sessions().Connected(sb.ID) })
	t.Logf("gateway restart to registered: %s", took.Round(time.Millisecond))
	eventually(t, reconnectBound, "the guest acknowledges the newest token", func() bool {
		got := e.get(sb.ID)
		return got.DeliveredGen == got.LatestGen
	})
	st := e.guestStatus(sb.ID)
	latest := e.get(sb.ID).LatestGen
	if st.Gen < latest-1 || st.TokenExpired || !st.ExpiresAt.After(time.Now()) {
		t.Errorf("guest status %s after the restart: %+v, want gen >= %d, unexpired", time.Since(reopened).Round(time.Millisecond), st, latest-1)
	}
}

func TestVMResumedPastTokenExpiryRegistersOnTheFirstTryAndExecs(t *testing.T) {
	e, sb := shared(t)
	ctx := context.Background()
	held := e.guestStatus(sb.ID)
	if _, err := e.gw.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	// The guest stopped gracefully: its supervisor forwarded SIGTERM to the
	// workload and reported the exit before powering off.
	st, err := e.drv.Status(ctx, sb.ID)
	if err != nil || st.State != driver.StateStopped || !st.Exited || st.ExitCode != 128+int(unix.SIGTERM) {
		t.Errorf("driver status after Stop: %+v, %v; want stopped, exited 143", st, err)
	}
	if wait := time.Until(held.ExpiresAt.Add(time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	started := time.Now()
	resumed, err := e.gw.Start(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	c := e.console(sb.ID)
	accepted := c.waitFor(t, 0, bootBound, "a registration", func(l guestLine) bool { return l.Msg == "session accepted" })
	t.Logf("resume to registered under TCG: %s", accepted.Seen.Sub(started).Round(time.Millisecond))
	if first := sessionLines(c.lines()); len(first) == 0 || !strings.HasPrefix(first[0], "session accepted") {
		t.Errorf("the session's first lines after the resume: %q, want registration on the first try", first)
	}
	if accepted.HeldGen < resumed.LatestGen || accepted.Rejected {
		t.Errorf("registration after the resume: %+v, want the fresh gen %d held and not rejected", accepted, resumed.LatestGen)
	}
	if out, res := e.exec(sb.ID, "true"); res.ExitCode != 0 {
		t.Fatalf("exec after the resume: %+v %s", res, out)
	}
	if st := e.guestStatus(sb.ID); st.Gen < resumed.LatestGen || st.TokenExpired {
		t.Errorf("guest status after the resume: %+v", st)
	}
}
