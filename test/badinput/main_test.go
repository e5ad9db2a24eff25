// Package badinput throws every malformed or hostile input the earlier
// issues name at the real binaries, built as `make build` builds them, and
// checks each time that the answer is a clear error and that nothing
// changed: token files and directory tricks written into a live sandbox's
// token directory, hostile frames on a sandbox's session socket, bad CLI
// arguments, bad configuration, and a store file that is not a database.
//
// The token directory is written only by the gateway; a hostile or
// corrupt write is simulated by writing into it directly, as root on the
// host could. The supervisor must keep its token (its status file keeps
// the same gen and jti) and log the rejection with its reason.
package badinput

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

func TestMain(m *testing.M) { binaries.RunTests(m) }

// result is how a run of the gateway binary ended.
type result struct {
	code   int
	stdout string
	stderr string
}

// withoutSettings drops the SANDKEY_* variables of environ: what a case
// gives the gateway is its env alone, not whatever the shell or `make
// test` (SANDKEY_KUBE_BIN) set, which the gateway would read as settings
// or warn about.
func withoutSettings(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "SANDKEY_") {
			out = append(out, kv)
		}
	}
	return out
}

// runGateway runs the gateway binary with args and returns how it ended.
// A run that does not end within 20 s fails the test: no input may hang it.
func runGateway(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaries.Gateway, args...)
	cmd.Env = append(withoutSettings(os.Environ()), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("gateway %q hung; stderr: %s", args, errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run gateway %q: %v", args, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// checkClearError fails unless r exited with code and its stderr is one
// short message holding every want, without a panic or a stack trace.
func checkClearError(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d; stderr: %s", r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q does not say %q", r.stderr, w)
		}
	}
	for _, bad := range []string{"panic:", "goroutine ", ".go:"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr holds %q (a crash or stack trace): %s", bad, r.stderr)
		}
	}
	if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; r.code != 0 && lines > 3 {
		t.Errorf("stderr is %d lines, not one clear message: %s", lines, r.stderr)
	}
}

// live is a running gateway binary with sandboxes on the process driver.
type live struct {
	t     *testing.T
	dir   string // short, for socket paths
	state string
	cmd   *exec.Cmd
	ids   map[string]string // name -> id
}

// startLive starts `gateway serve` with hour-long tokens (nothing rotates
// unless a test asks) and one running sandbox per name, each registered.
func startLive(t *testing.T, names ...string) *live {
	t.Helper()
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	l := &live{t: t, dir: dir, state: filepath.Join(dir, "state"), ids: map[string]string{}}
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	l.cmd = exec.Command(binaries.Gateway, "serve", "--state-dir", l.state, "--token-lifetime", "1h",
		"--heartbeat-interval", "1s", "--http-addr", "", "--supervisor", binaries.Supervisor, "--stop-grace", "1s")
	l.cmd.Stdout, l.cmd.Stderr = logf, logf
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	t.Cleanup(l.stop)
	eventually(t, 20*time.Second, "the gateway answers", func() bool {
		_, err := l.cliErr("sandbox", "list")
		return err == nil
	})
	for _, name := range names {
		l.cli("sandbox", "create", name, "--start", "--", "sleep", "600")
	}
	for _, sb := range l.list() {
		l.ids[sb.Name] = sb.ID
	}
	eventually(t, 20*time.Second, "every sandbox registered and holding its token", func() bool {
		for _, sb := range l.list() {
			if !sb.Connected || l.status(sb.Name).Gen != sb.LatestGen {
				return false
			}
		}
		return true
	})
	return l
}

// stop deletes the sandboxes (ending their processes) and the gateway.
func (l *live) stop() {
	for name := range l.ids {
		l.cliErr("sandbox", "delete", name)
	}
	l.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		l.cmd.Process.Kill()
		<-done
	}
	if l.t.Failed() {
		logs, _ := os.ReadFile(filepath.Join(l.dir, "gateway.log"))
		l.t.Logf("gateway log:\n%s", tail(string(logs), 40))
	}
	if err := binaries.UnmountUnder(l.dir); err != nil {
		l.t.Error(err)
	}
	os.RemoveAll(l.dir)
}

func (l *live) cliErr(args ...string) (string, error) {
	r := runGateway(l.t, nil, append([]string{"--state-dir", l.state}, args...)...)
	if r.code != 0 {
		return r.stdout, fmt.Errorf("gateway %v: exit %d: %s", args, r.code, r.stderr)
	}
	return r.stdout, nil
}

func (l *live) cli(args ...string) string {
	l.t.Helper()
	out, err := l.cliErr(args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

type listed struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	State        string `json:"state"`
	LatestGen    uint64 `json:"latest_gen"`
	DeliveredGen uint64 `json:"delivered_gen"`
	Connected    bool   `json:"connected"`
}

func (l *live) list() []listed {
	l.t.Helper()
	var all []listed
	if err := json.Unmarshal([]byte(l.cli("sandbox", "list", "-o", "json")), &all); err != nil {
		l.t.Fatal(err)
	}
	return all
}

func (l *live) sandboxDir(name string) string {
	return filepath.Join(l.state, "sandboxes", l.ids[name])
}
func (l *live) tokenDir(name string) string { return binaries.TokenDir(l.state, l.ids[name]) }
func (l *live) socket(name string) string {
	return binaries.Socket(l.state, l.ids[name])
}

// status reads the supervisor's status file of a sandbox.
func (l *live) status(name string) supervisor.Status {
	st, _ := supervisor.ReadStatus(filepath.Join(l.sandboxDir(name), "driver", "status.json"))
	return st
}

// supervisorLog returns the sandbox's supervisor log from byte offset on.
func (l *live) supervisorLog(name string, offset int64) string {
	data, _ := os.ReadFile(filepath.Join(l.sandboxDir(name), "driver", "sandbox.log"))
	if int64(len(data)) < offset {
		return ""
	}
	return string(data[offset:])
}

func (l *live) logSize(name string) int64 {
	fi, err := os.Stat(filepath.Join(l.sandboxDir(name), "driver", "sandbox.log"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logEntry is one JSON line of a supervisor's log.
type logEntry struct {
	Msg    string `json:"msg"`
	Reason string `json:"reason"`
	Origin string `json:"origin"`
	Error  string `json:"error"`
}

// rejections returns the token rejections logged in text.
func rejections(text string) []logEntry {
	var out []logEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && strings.HasPrefix(e.Msg, "token rejected") {
			out = append(out, e)
		}
	}
	return out
}

// eventually polls cond every 20 ms until it holds, failing t after bound.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
