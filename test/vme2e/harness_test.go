package vme2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/vm"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/memroot"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

// Settings of the gateway under test. The token tests' tokens live the
// minimum, so that expiry can be waited out; heartbeats are fast, so a cut
// session is seen within seconds.
const (
	shortLifetime = 10 * time.Second
	heartbeat     = time.Second
	// bootBound bounds boot to registration under TCG (measured: 3-5 s).
	bootBound = 60 * time.Second
	// execTimeout bounds one exec in a guest.
	execTimeout = 30 * time.Second
)

// env is a gateway with the vm driver on a state directory of its own,
// which it can close and open again while its VMs run on.
type env struct {
	t        testing.TB // the test using it now
	dir      string     // short: sockets live under it
	lifetime time.Duration
	log      *zap.Logger // to gateway.log in dir
	logFile  *os.File

	drv  *vm.Driver
	gw   *gateway.Gateway
	stop context.CancelFunc
	done chan struct{}
}

func newEnv(t testing.TB, lifetime time.Duration) *env {
	t.Helper()
	requireVM(t)
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, lifetime: lifetime}
	binaries.MemoryRoots(t, filepath.Join(dir, "state"))
	if e.logFile, err = os.Create(filepath.Join(dir, "gateway.log")); err != nil {
		t.Fatal(err)
	}
	e.log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(e.logFile), zapcore.InfoLevel))
	e.use(t)
	e.open()
	return e
}

// use makes t the test using e: failures are reported on it, and when it
// fails the end of the gateway's log goes to its output.
func (e *env) use(t testing.TB) {
	e.t = t
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(e.logFile.Name())
			if len(data) > 8000 {
				data = data[len(data)-8000:]
			}
			t.Logf("end of %s:\n%s", e.logFile.Name(), data)
		}
	})
}

// open opens the driver and the gateway (which reconciles what runs) and
// serves.
func (e *env) open() {
	e.t.Helper()
	drv, err := vm.New(vm.Config{
		StateRoot: filepath.Join(e.dir, "vm"), Image: imageDir, Accel: vm.AccelTCG,
		DeleteGrace: 5 * time.Second, Logger: e.log.Named("vm"),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	gw, err := gateway.Open(context.Background(), gateway.Config{
		StateDir: filepath.Join(e.dir, "state"), Lifetime: e.lifetime, StopGrace: 10 * time.Second,
		SweepInterval: 100 * time.Millisecond, HeartbeatInterval: heartbeat, Jitter: func() float64 { return 0 },
		Drivers: map[string]driver.Driver{vm.Name: drv}, DefaultDriver: vm.Name,
		Logger: e.log.Named("gateway"),
	})
	if err != nil {
		drv.Close()
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.drv, e.gw, e.stop, e.done = drv, gw, cancel, make(chan struct{})
	go func() { defer close(e.done); gw.Serve(ctx) }()
}

// close closes the gateway and the driver; VMs keep running.
func (e *env) close() {
	if e.gw == nil {
		return
	}
	e.stop()
	<-e.done
	e.gw.Close()
	e.drv.Close()
	e.gw = nil
}

// destroy deletes every sandbox and everything on disk. An error is the
// unmount of the state directory's tmpfs roots, which outlive the test.
func (e *env) destroy() error {
	if e.gw != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if all, err := e.gw.List(ctx); err == nil {
			for _, sb := range all {
				if err := e.gw.Delete(ctx, sb.ID); err != nil {
					e.t.Errorf("delete sandbox %s: %v", sb.ID, err)
				}
			}
		}
		cancel()
	}
	e.close()
	e.log.Sync()
	e.logFile.Close()
	err := binaries.UnmountUnder(e.dir)
	os.RemoveAll(e.dir)
	return err
}

// create creates and starts a VM sandbox running argv.
func (e *env) create(name string, argv ...string) gateway.Sandbox {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := e.gw.Create(ctx, gateway.CreateRequest{Name: name, Start: true, Spec: gateway.Spec{Command: argv}})
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

func (e *env) get(id string) gateway.Sandbox {
	e.t.Helper()
	sb, err := e.gw.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

// driverDir is the sandbox's state directory of the vm driver.
func (e *env) driverDir(id string) string {
	return filepath.Join(e.dir, "state", "sandboxes", id, "driver")
}

func (e *env) tokenDir(id string) string {
	return filepath.Join(e.dir, "state", "tokens", id)
}

func (e *env) socketDir(id string) string {
	return filepath.Join(memroot.SocketRoot(filepath.Join(e.dir, "state")), id)
}

// vmRecord reads the driver's record of the sandbox's current start.
func (e *env) vmRecord(id string) vmProcesses {
	e.t.Helper()
	var rec vmProcesses
	data, err := os.ReadFile(filepath.Join(e.driverDir(id), "vm.json"))
	if err == nil {
		err = json.Unmarshal(data, &rec)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// vmProcesses is the part of the driver's vm.json the tests use.
type vmProcesses struct {
	VMM       struct{ PID int } `json:"vmm"`
	Virtiofsd struct{ PID int } `json:"virtiofsd"`
}

// exec runs argv in the guest through the session.
func (e *env) exec(id string, argv ...string) (string, session.ExecResult) {
	e.t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	res, err := e.gw.Exec(ctx, id, session.ExecRequest{Argv: argv, Stdout: &out, Stderr: &out})
	if err != nil {
		e.t.Fatalf("exec %q in %s: %v", argv, id, err)
	}
	return out.String(), res
}

// guestStatus reads the supervisor's status file in the guest.
func (e *env) guestStatus(id string) supervisor.Status {
	e.t.Helper()
	out, res := e.exec(id, "cat", guest.StatusFile)
	var st supervisor.Status
	if res.ExitCode != 0 {
		e.t.Fatalf("cat %s: exit %d: %s", guest.StatusFile, res.ExitCode, out)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("guest status %q: %v", out, err)
	}
	return st
}

// eventually polls cond every 10 ms until it holds, and returns how long
// that took; it fails the test after bound.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("not within %s: %s", bound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// guestLine is one JSON log line of the guest's supervisor, read from the
// console log on the host, with when the host saw it.
type guestLine struct {
	Seen     time.Time
	Msg      string `json:"msg"`
	Logger   string `json:"logger"`
	Origin   string `json:"origin"`
	Gen      uint64 `json:"gen"`
	HeldGen  uint64 `json:"held_gen"`
	Sent     bool   `json:"token_sent"`
	Rejected bool   `json:"token_rejected"`
	Error    string `json:"error"`
}

// console follows a guest's console log as it grows. QEMU writes what the
// guest prints at once, so a line's Seen time is within the follower's
// poll of when the guest printed it.
type console struct {
	path string
	mu   sync.Mutex
	off  int64
	part []byte
	seen []guestLine
}

func newConsole(path string) *console { return &console{path: path} }

// poll reads what was added since the last poll.
func (c *console) poll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.Open(c.path)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < c.off {
		c.off, c.part = 0, nil // a new boot's log
	}
	f.Seek(c.off, 0)
	buf := make([]byte, 256<<10)
	now := time.Now()
	for {
		n, _ := f.Read(buf)
		if n == 0 {
			break
		}
		c.off += int64(n)
		c.part = append(c.part, buf[:n]...)
	}
	for {
		i := bytes.IndexByte(c.part, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSpace(c.part[:i])
		c.part = c.part[i+1:]
		var gl guestLine
		if j := bytes.IndexByte(line, '{'); j >= 0 && json.Unmarshal(line[j:], &gl) == nil && gl.Msg != "" {
			gl.Seen = now
			c.seen = append(c.seen, gl)
		}
	}
}

// lines returns every line seen so far.
func (c *console) lines() []guestLine {
	c.poll()
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]guestLine(nil), c.seen...)
}

// find returns the first line seen at index from or later that matches.
func (c *console) find(from int, match func(guestLine) bool) (guestLine, int, bool) {
	all := c.lines()
	for i := from; i < len(all); i++ {
		if match(all[i]) {
			return all[i], i, true
		}
	}
	return guestLine{}, len(all), false
}

// waitFor polls the console every 5 ms until a line at index from or later
// matches, and returns it.
func (c *console) waitFor(t testing.TB, from int, bound time.Duration, what string, match func(guestLine) bool) guestLine {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		if l, _, ok := c.find(from, match); ok {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest console shows no %s within %s; its end:\n%s", what, bound, c.tail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mark is the index the next line will have.
func (c *console) mark() int { return len(c.lines()) }

// tail is the end of the console log, for failure messages.
func (c *console) tail() string {
	data, _ := os.ReadFile(c.path)
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return string(data)
}

// tokenAccepted matches the supervisor's log of a token it took, from
// origin (any when empty), of generation gen or newer.
func tokenAccepted(origin string, gen uint64) func(guestLine) bool {
	return func(l guestLine) bool {
		return l.Msg == "token accepted" && l.Gen >= gen && (origin == "" || l.Origin == origin)
	}
}

// sessionLines returns the session client's lines of the console.
func sessionLines(lines []guestLine) []string {
	var out []string
	for _, l := range lines {
		if l.Logger == "session" {
			out = append(out, fmt.Sprintf("%s (error %q)", l.Msg, l.Error))
		}
	}
	return out
}

// signalAll sends sig to every pid, for freezing and thawing processes.
func signalAll(t testing.TB, sig unix.Signal, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil {
			t.Fatalf("send %s to pid %d: %v", unix.SignalName(sig), pid, err)
		}
	}
}

// sessionOf lists the live processes of session sid: virtiofsd with its
// sandboxed server, say.
func sessionOf(t testing.TB, sid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		f := strings.Fields(string(data[i+1:]))
		var pid, s int
		fmt.Sscan(e.Name(), &pid)
		if len(f) > 3 {
			fmt.Sscan(f[3], &s)
		}
		if s == sid && f[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processesWithArg lists the processes one of whose arguments is arg.
func processesWithArg(t testing.TB, arg string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		data, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		for _, a := range strings.Split(string(data), "\x00") {
			if strings.Contains(a, arg) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// commandOf is the command name of pid.
func commandOf(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}
