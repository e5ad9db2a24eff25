package scale

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/dirwatch/dirwatchtest"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/pkg/testmain"
	"github.com/sandkey/sandkey/test/binaries"
)

const (
	// sandboxes is how many sandboxes share the gateway, and so the host
	// user's inotify instances: far more than the common default of 128.
	sandboxes = 300
	// lifetime is the shortest token lifetime there is.
	lifetime = 10 * time.Second
	// recoveryBound is the guarantee: every supervisor holds a fresh token
	// and a session this soon after the gateway is ready (p99).
	recoveryBound = 2 * time.Second
	// giveUp bounds the wait for the slowest supervisor, so that a broken
	// recovery still ends with its numbers.
	giveUp = 45 * time.Second
	// instancesSysctl is the per-user limit of inotify instances.
	instancesSysctl = "/proc/sys/fs/inotify/max_user_instances"
)

// Restarting a gateway whose tokens all expired while it was down brings
// every supervisor back to a fresh token and a session within
// recoveryBound of /readyz, whether the host user's inotify instances run
// out long before its supervisors do (the common default of 128) or not.
//
// The gateway and its supervisors run as a user of their own, so that the
// limit counts them alone: nothing else on the machine shares or feels it.
func TestEverySupervisorRecoversWithinTwoSecondsOfGatewayReadiness(t *testing.T) {
	if os.Geteuid() != 0 {
		testmain.SkipIfMissing(t, errors.New("the scale test runs its gateway as a user of its own and sets fs.inotify.max_user_instances: it needs root"), true)
	}
	for _, tc := range []struct {
		name      string
		instances int
		degraded  bool // whether some supervisors must go without inotify
	}{
		{"inotify_instances_128", 128, true},
		{"inotify_instances_raised", 2 * sandboxes * 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setInotifyInstances(t, tc.instances)
			h := runRecovery(t, tc.degraded)
			// The gateway told the operator, and its metrics show why.
			metrics := h.get("/metrics")
			for _, want := range []string{
				fmt.Sprintf("sandkey_inotify_max_user_instances %d\n", tc.instances),
				fmt.Sprintf("sandkey_host_kernel_sandboxes %d\n", sandboxes),
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
				}
			}
			warned := strings.Contains(h.read("gateway.log"), "sysctl -w fs.inotify.max_user_instances=1024")
			if warned != tc.degraded {
				t.Errorf("gateway warned with the sysctl to run: %v, want %v", warned, tc.degraded)
			}
		})
	}
}

// setInotifyInstances sets fs.inotify.max_user_instances for the test and
// restores the machine's value afterwards.
func setInotifyInstances(t *testing.T, n int) {
	t.Helper()
	old, err := os.ReadFile(instancesSysctl)
	if err != nil {
		t.Fatalf("read %s: %v", instancesSysctl, err)
	}
	if strings.TrimSpace(string(old)) == strconv.Itoa(n) {
		t.Logf("fs.inotify.max_user_instances is %d already", n)
		return
	}
	if err := os.WriteFile(instancesSysctl, []byte(strconv.Itoa(n)), 0o644); err != nil {
		t.Fatalf("set fs.inotify.max_user_instances=%d: %v", n, err)
	}
	t.Logf("fs.inotify.max_user_instances set to %d (was %s) for the test", n, strings.TrimSpace(string(old)))
	t.Cleanup(func() {
		if err := os.WriteFile(instancesSysctl, old, 0o644); err != nil {
			t.Errorf("restore fs.inotify.max_user_instances=%s: %v", strings.TrimSpace(string(old)), err)
		}
	})
}

// host is one run's gateway user, directory and gateway process.
type host struct {
	t        *testing.T
	uid      uint32
	dir      string
	state    string
	gateway  string // the binaries, copied where the user can run them
	super    string
	httpAddr string
	cmd      *exec.Cmd
	cmdDone  chan struct{}
}

func newHost(t *testing.T) *host {
	t.Helper()
	dir, err := os.MkdirTemp("", "sks")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, uid: freeUID(t), dir: dir, state: filepath.Join(dir, "state")}
	t.Cleanup(func() {
		h.killAll()
		if os.Getenv("SANDKEY_KEEP_LOGS") != "" {
			t.Logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := os.Chown(dir, int(h.uid), int(h.uid)); err != nil {
		t.Fatal(err)
	}
	h.gateway, h.super = filepath.Join(dir, "gateway"), filepath.Join(dir, "supervisor")
	copyExecutable(t, binaries.Gateway, h.gateway)
	copyExecutable(t, binaries.Supervisor, h.super)
	h.httpAddr = freeLoopbackAddr(t)
	return h
}

// freeUID picks a user id that no process has, far above any real user's.
func freeUID(t *testing.T) uint32 {
	for uid := uint32(1_700_000_000 + os.Getpid()%100_000); ; uid++ {
		if len(processesOf(uid)) == 0 {
			return uid
		}
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs `gateway serve` as the host's user and returns once /readyz
// says ready, with the moment it first did.
func (h *host) start() time.Time {
	h.t.Helper()
	h.spawn()
	return h.awaitReady()
}

// spawn starts `gateway serve` as the host's user.
func (h *host) spawn() {
	h.t.Helper()
	logf, err := os.OpenFile(filepath.Join(h.dir, "gateway.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(h.gateway, "serve", "--state-dir", h.state, "--token-lifetime", lifetime.String(),
		"--sweep-interval", "200ms", "--heartbeat-interval", "2s", "--http-addr", h.httpAddr,
		"--supervisor", h.super, "--stop-grace", "1s")
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + h.dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: h.uid, Gid: h.uid}}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.cmd, h.cmdDone = cmd, make(chan struct{})
	done := h.cmdDone
	go func() { cmd.Wait(); close(done) }()
}

// awaitReady waits until the spawned gateway's /readyz says ready and
// returns the moment it first did.
func (h *host) awaitReady() time.Time {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ready(h.httpAddr) {
			return time.Now()
		}
		select {
		case <-h.cmdDone:
			h.t.Fatalf("gateway exited at start: %s", h.tail("gateway.log"))
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("gateway not ready within a minute: %s", h.tail("gateway.log"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probe asks /readyz without keeping connections (and their goroutines).
var probe = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}

func ready(addr string) bool {
	resp, err := probe.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// stop stops the gateway as an operator would (SIGTERM): its sandboxes
// keep running.
func (h *host) stop() {
	h.t.Helper()
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.cmdDone:
	case <-time.After(30 * time.Second):
		h.t.Fatal("gateway did not stop within 30 s of SIGTERM")
	}
}

// killAll ends every process of the host's user, by PID: the gateway
// first, then its supervisors and their workloads. They are all this
// test's: the user is its own.
func (h *host) killAll() {
	if h.cmd != nil {
		h.cmd.Process.Kill()
		<-h.cmdDone
	}
	for range 50 {
		pids := processesOf(h.uid)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Errorf("processes of uid %d still running after SIGKILL: %v", h.uid, processesOf(h.uid))
}

// processesOf lists the processes whose real user is uid.
func processesOf(uid uint32) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(rest); len(f) > 0 && f[0] == strconv.FormatUint(uint64(uid), 10) {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

func (h *host) read(name string) string {
	data, _ := os.ReadFile(filepath.Join(h.dir, name))
	return string(data)
}

func (h *host) tail(name string) string {
	data := h.read(name)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return data
}

// get returns the body of a GET of the gateway's HTTP path.
func (h *host) get(path string) string {
	h.t.Helper()
	resp, err := probe.Get("http://" + h.httpAddr + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(body)
}

func (h *host) admin() adminpb.AdminClient {
	h.t.Helper()
	client, conn, err := admin.Dial(context.Background(), filepath.Join(h.state, "admin.sock"), admin.DialOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return client
}

func (h *host) list(client adminpb.AdminClient) []*adminpb.Sandbox {
	h.t.Helper()
	resp, err := client.ListSandboxes(context.Background(), &adminpb.ListSandboxesRequest{})
	if err != nil {
		h.t.Fatalf("list sandboxes: %v", err)
	}
	return resp.GetSandboxes()
}

func (h *host) sandboxFile(id string, parts ...string) string {
	return filepath.Join(append([]string{h.state, "sandboxes", id}, parts...)...)
}

// createSandboxes creates and starts n sandboxes, a few at a time.
func (h *host) createSandboxes(client adminpb.AdminClient, n int) {
	h.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				_, err := client.CreateSandbox(context.Background(), &adminpb.CreateSandboxRequest{
					Name: fmt.Sprintf("sb%03d", i), Command: []string{"sleep", "3600"}, Start: true})
				if err != nil {
					errs <- fmt.Errorf("create sb%03d: %w", i, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatal(err)
	}
}

func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("not within %s: %s", bound, what)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func runRecovery(t *testing.T, wantDegraded bool) *host {
	h := newHost(t)
	h.start()
	client := h.admin()
	began := time.Now()
	h.createSandboxes(client, sandboxes)
	t.Logf("%d sandboxes created in %s", sandboxes, time.Since(began).Round(time.Millisecond))
	if !waitFor(t, 60*time.Second, "every supervisor holds a session and its newest token", func() bool {
		for _, sb := range h.list(client) {
			if !sb.GetConnected() || sb.GetDeliveredGen() != sb.GetLatestGen() {
				return false
			}
		}
		return true
	}) {
		t.FailNow()
	}

	// The gateway goes away until every token has expired.
	heldGen := map[string]uint64{}
	for _, sb := range h.list(client) {
		heldGen[sb.GetId()] = sb.GetLatestGen()
	}
	h.stop()
	stopped := time.Now()
	var lastExp time.Time
	for id := range heldGen {
		raw, err := tokendir.ReadToken(binaries.TokenDir(h.state, id))
		if err != nil {
			t.Fatalf("sandbox %s: %v", id, err)
		}
		tok, err := auth.ParseUnverified(string(raw))
		if err != nil {
			t.Fatalf("sandbox %s: %v", id, err)
		}
		heldGen[id] = max(heldGen[id], tok.Gen())
		if tok.ExpiresAt().After(lastExp) {
			lastExp = tok.ExpiresAt()
		}
	}
	time.Sleep(time.Until(lastExp) + 200*time.Millisecond)
	// Reconnecting, each supervisor holds at most one inotify instance.
	for _, pid := range processesOf(h.uid) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "supervisor" {
			continue
		}
		if n, _ := dirwatchtest.InotifyInstances(pid); n > 1 {
			t.Errorf("supervisor %d holds %d inotify instances while reconnecting, want at most 1", pid, n)
		}
	}
	t.Logf("gateway down %s; every token expired", time.Since(stopped).Round(time.Millisecond))

	restarted := time.Now()
	readyAt := h.start()
	// Every sandbox's socket was bound before /readyz said ready.
	var missing []string
	for id := range heldGen {
		if _, err := os.Stat(binaries.Socket(h.state, id)); err != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d sandbox sockets missing when /readyz first said ready (%s after the restart), e.g. %s",
			len(missing), readyAt.Sub(restarted).Round(time.Millisecond), missing[0])
	}
	client = h.admin()
	waitFor(t, giveUp, "every supervisor back with a session and a fresh token", func() bool {
		for _, sb := range h.list(client) {
			if !sb.GetConnected() || sb.GetDeliveredGen() <= heldGen[sb.GetId()] {
				return false
			}
		}
		return true
	})

	var tokenDelays, sessionDelays []time.Duration
	degraded := 0
	slowest, slowestDelay := "", time.Duration(0)
	for id, held := range heldGen {
		ev := recoveryEvents(t, h.sandboxFile(id, "driver", "sandbox.log"), held, stopped)
		if ev.token.IsZero() || ev.session.IsZero() {
			t.Errorf("sandbox %s: no fresh token (%v) or no session (%v) after the restart; log tail: %s",
				id, ev.token, ev.session, h.tail(filepath.Join("state", "sandboxes", id, "driver", "sandbox.log")))
			tokenDelays, sessionDelays = append(tokenDelays, giveUp), append(sessionDelays, giveUp)
			continue
		}
		tokenDelays = append(tokenDelays, ev.token.Sub(readyAt))
		sessionDelays = append(sessionDelays, ev.session.Sub(readyAt))
		if d := max(ev.token.Sub(readyAt), ev.session.Sub(readyAt)); d > slowestDelay {
			slowest, slowestDelay = id, d
		}
		st, err := supervisor.ReadStatus(h.sandboxFile(id, "driver", process.StatusFileName))
		if err != nil {
			t.Errorf("sandbox %s: %v", id, err)
		}
		if st.Degraded != "" || ev.degraded {
			degraded++
		}
	}
	t.Logf("gateway ready %s after its restart; %d of %d supervisors without inotify",
		readyAt.Sub(restarted).Round(time.Millisecond), degraded, sandboxes)
	t.Logf("fresh token after readiness: %s", summary(tokenDelays))
	t.Logf("session after readiness:     %s", summary(sessionDelays))
	if slowestDelay > recoveryBound {
		t.Logf("slowest supervisor (%s, %s after readiness at %.3f), its log since the stop (%.3f):\n%s", slowest,
			slowestDelay.Round(time.Millisecond), float64(readyAt.UnixNano())/1e9, float64(stopped.UnixNano())/1e9,
			logSince(h.sandboxFile(slowest, "driver", "sandbox.log"), stopped.Add(-time.Minute)))
	}
	if wantDegraded != (degraded > 0) {
		t.Errorf("%d supervisors without inotify; the test wants some: %v", degraded, wantDegraded)
	}
	if p := percentile(tokenDelays, 99); p > recoveryBound {
		t.Errorf("p99 time from readiness to a fresh token is %s, want at most %s", p, recoveryBound)
	}
	if p := percentile(sessionDelays, 99); p > recoveryBound {
		t.Errorf("p99 time from readiness to a session is %s, want at most %s", p, recoveryBound)
	}
	return h
}

// events is what one supervisor's log says of its recovery.
type events struct {
	token, session time.Time // first fresh token accepted, first session accepted
	degraded       bool      // it said it could not use inotify
}

// recoveryEvents reads a supervisor's JSON log for the first token newer
// than held and the first session, both after since.
func recoveryEvents(t *testing.T, path string, held uint64, since time.Time) events {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("supervisor log: %v", err)
		return events{}
	}
	defer f.Close()
	var ev events
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue // the workload's own output
		}
		var entry struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
			Gen uint64  `json:"gen"`
			Err string  `json:"error"`
		}
		if json.Unmarshal(line, &entry) != nil {
			continue
		}
		if strings.Contains(entry.Err, "inotify") {
			ev.degraded = true
		}
		at := time.Unix(0, int64(entry.TS*1e9))
		if at.Before(since) {
			continue
		}
		switch {
		case entry.Msg == "token accepted" && entry.Gen > held && ev.token.IsZero():
			ev.token = at
		case entry.Msg == "session accepted" && ev.session.IsZero():
			ev.session = at
		}
	}
	return ev
}

// logSince returns the lines of a supervisor's JSON log from since on.
func logSince(path string, since time.Time) string {
	data, _ := os.ReadFile(path)
	var out strings.Builder
	for line := range strings.Lines(string(data)) {
		var entry struct {
			TS float64 `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && !time.Unix(0, int64(entry.TS*1e9)).Before(since) {
			out.WriteString(line)
		}
	}
	return out.String()
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func summary(ds []time.Duration) string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", percentile(ds, 50).Round(time.Millisecond),
		percentile(ds, 99).Round(time.Millisecond), percentile(ds, 100).Round(time.Millisecond), len(ds))
}
