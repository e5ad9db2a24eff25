package gatewaycmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/test/binaries"
)

// The test binary doubles as the supervisor the process driver starts;
// roleEnv selects the role. Its name does not start with SANDKEY_, so the
// driver passes it through from the sandbox's environment.
const (
	roleEnv        = "GATEWAYCMD_TEST_ROLE"
	roleSupervisor = "supervisor"
	// noExitSleep, as GORACE, keeps a race-enabled stand-in from sleeping
	// a second at exit, which would slow every stop down.
	noExitSleep = "atexit_sleep_ms=0"
	waitTimeout = 15 * time.Second
)

// standInSupervisor stands in for cmd/supervisor, which is not built yet:
// it is the supervisor's session half made of the real parts (auth/source
// reads the token directory; session.Client keeps the session and runs
// execs with session.CommandRunner), without the PID-1 duties. It does
// not run the workload; it serves the session until SIGTERM.
func standInSupervisor() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	id := os.Getenv(guest.EnvSandboxID)
	src, err := source.New(ctx, source.Config{
		SandboxID: id, Dir: os.Getenv(guest.EnvTokenDir),
		Issuer: os.Getenv(guest.EnvIssuer), Audience: os.Getenv(guest.EnvAudience), TrustDomain: os.Getenv(guest.EnvTrustDomain),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "stand-in supervisor: %v\n", err)
		return 1
	}
	defer src.Close()
	c, err := session.NewClient(session.ClientConfig{
		Target: os.Getenv(guest.EnvGateway), SandboxID: id, InstanceID: os.Getenv(guest.EnvInstanceID),
		Version: "gatewaycmd-test-stand-in", Source: src,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "stand-in supervisor: %v\n", err)
		return 1
	}
	defer c.Close()
	c.Run(ctx)
	return 0
}

// testGateway is a real gateway (SQLite store, process driver) serving
// its operator API on <state>/admin.sock, as `gateway serve` does.
type testGateway struct {
	state string
	gw    *gateway.Gateway
}

func startTestGateway(t *testing.T) *testGateway {
	t.Helper()
	// Sandbox sockets live at <state>/sockets/<32 hex>/gw.sock: the
	// state directory's path must stay short for a unix socket.
	state := binaries.TempDir(t, "skcli")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	procDriver, err := process.New(process.Config{SupervisorPath: self, StateRoot: filepath.Join(state, "process"), Logger: log.Named("process")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gw, err := gateway.Open(ctx, gateway.Config{
		StateDir:      state,
		StopGrace:     5 * time.Second,
		Drivers:       map[string]driver.Driver{process.Name: procDriver},
		DefaultDriver: process.Name,
		Logger:        log.Named("gateway"),
	})
	if err != nil {
		cancel()
		procDriver.Close()
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	admin.Register(srv, gw, log.Named("admin"))
	l, err := admin.ListenUnix(filepath.Join(state, AdminSocketName))
	if err != nil {
		cancel()
		gw.Close()
		procDriver.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		srv.Serve(l)
	}()
	go func() {
		defer wg.Done()
		gw.Serve(ctx)
	}()
	t.Cleanup(func() {
		// Whatever the test left running must not outlive it: the process
		// driver leaves sandboxes running when the gateway closes.
		all, _ := gw.List(context.Background())
		for _, sb := range all {
			if err := gw.Delete(context.Background(), sb.ID); err != nil {
				t.Errorf("clean up sandbox %s: %v", sb.Name, err)
			}
		}
		srv.Stop()
		cancel()
		wg.Wait()
		gw.Close()
		procDriver.Close() // the gateway does not own its drivers
	})
	return &testGateway{state: state, gw: gw}
}

// cli runs the command line against the gateway.
func (tg *testGateway) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, append([]string{"--state-dir", tg.state}, args...)...)
}

// ok runs the command line and fails the test unless it succeeds.
func (tg *testGateway) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := tg.cli(t, args...)
	if code != ExitOK {
		t.Fatalf("gateway %q: exit %d, stderr: %s", args, code, stderr)
	}
	return stdout
}

// sandbox reads a sandbox through `-o json sandbox get`.
func (tg *testGateway) sandbox(t *testing.T, ref string) sandboxJSON {
	t.Helper()
	var sb sandboxJSON
	if err := json.Unmarshal([]byte(tg.ok(t, "-o", "json", "sandbox", "get", ref)), &sb); err != nil {
		t.Fatal(err)
	}
	return sb
}

// waitFor polls the sandbox until cond holds.
func (tg *testGateway) waitFor(t *testing.T, ref, what string, cond func(sandboxJSON) bool) sandboxJSON {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		sb := tg.sandbox(t, ref)
		if cond(sb) {
			return sb
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: %s: not within %s; last seen %+v", ref, what, waitTimeout, sb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exec runs `sandbox exec` through the command tree with stdin and
// returns its error, which carries the command's exit status.
func (tg *testGateway) exec(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := NewRoot(&stdout, &stderr)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--state-dir", tg.state, "sandbox", "exec"}, args...))
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func exitCode(err error) int {
	var ce commandExit
	if errors.As(err, &ce) {
		return ce.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestCLIDrivesARealGatewayThroughASandboxsLife(t *testing.T) {
	clearAdminEnv(t)
	tg := startTestGateway(t)
	workloadEnv := []string{"-e", roleEnv + "=" + roleSupervisor, "-e", "GORACE=" + noExitSleep}

	if out := tg.ok(t, "sandbox", "list"); !strings.Contains(out, "No sandboxes") {
		t.Errorf("list of a new gateway: %q", out)
	}
	out := tg.ok(t, append(append([]string{"sandbox", "create", "web", "--start"}, workloadEnv...), "--", "sleep", "3600")...)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "web ") || !strings.Contains(lines[1], " running ") {
		t.Fatalf("create --start printed:\n%s", out)
	}
	sb := tg.waitFor(t, "web", "supervisor connected with generation 1", func(sb sandboxJSON) bool {
		return sb.Connected && sb.DeliveredGen == 1
	})
	if sb.State != "running" || sb.Driver != process.Name || sb.LatestGen != 1 || sb.WrittenGen != 1 ||
		strings.Join(sb.Command, " ") != "sleep 3600" || sb.Env[roleEnv] != roleSupervisor || len(sb.ID) != 32 {
		t.Errorf("sandbox after create --start: %+v", sb)
	}
	if byID := tg.sandbox(t, sb.ID); byID.Name != "web" {
		t.Errorf("get by id found %+v", byID)
	}
	var listed []sandboxJSON
	if err := json.Unmarshal([]byte(tg.ok(t, "-o", "json", "sandbox", "list")), &listed); err != nil || len(listed) != 1 || listed[0].ID != sb.ID {
		t.Errorf("list -o json = %+v (%v)", listed, err)
	}

	t.Run("exec streams output and returns the exit status", func(t *testing.T) {
		stdout, stderr, err := tg.exec(t, "", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
		if stdout != "out\n" || stderr != "err\n" || exitCode(err) != 3 {
			t.Errorf("exec: stdout %q, stderr %q, exit %d (%v)", stdout, stderr, exitCode(err), err)
		}
		stdout, _, err = tg.exec(t, "hello sandbox", "web", "--stdin", "-e", "SUFFIX=!", "--", "sh", "-c", `tr a-z A-Z; echo "$SUFFIX"`)
		if stdout != "HELLO SANDBOX!\n" || err != nil {
			t.Errorf("exec --stdin -e: stdout %q, err %v", stdout, err)
		}
		_, stderr, err = tg.exec(t, "", "web", "--", "/no/such/binary")
		if exitCode(err) != session.ExitNotFound || !strings.Contains(stderr, "/no/such/binary") {
			t.Errorf("exec of a missing binary: exit %d (%v), stderr %q", exitCode(err), err, stderr)
		}
		_, _, err = tg.exec(t, "", "web", "--timeout", "300ms", "--", "sleep", "30")
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("exec past its timeout: %v", err)
		}
		code, stdout, _ := tg.cli(t, "sandbox", "exec", "web", "--", "echo", "through Main")
		if code != ExitOK || stdout != "through Main\n" {
			t.Errorf("exec through Main: exit %d, stdout %q", code, stdout)
		}
	})

	t.Run("rotate mints a generation the supervisor acknowledges", func(t *testing.T) {
		out := tg.ok(t, "sandbox", "rotate", "web")
		if !strings.Contains(out, "generation 2") {
			t.Errorf("rotate printed %q", out)
		}
		tg.waitFor(t, "web", "generation 2 delivered", func(sb sandboxJSON) bool { return sb.LatestGen == 2 && sb.DeliveredGen == 2 })
		var res struct {
			Sandbox string `json:"sandbox"`
			Gen     uint64 `json:"gen"`
		}
		if err := json.Unmarshal([]byte(tg.ok(t, "-o", "json", "sandbox", "rotate", sb.ID)), &res); err != nil || res.Gen != 3 || res.Sandbox != sb.ID {
			t.Errorf("rotate -o json = %+v (%v)", res, err)
		}
	})

	t.Run("errors name the sandbox and pick the exit code", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			code int
			want string
		}{
			{"unknown sandbox", []string{"sandbox", "get", "nope"}, ExitNotFound, `"nope"`},
			{"stop of an unknown sandbox", []string{"sandbox", "stop", "nope"}, ExitNotFound, `"nope"`},
			{"taken name", []string{"sandbox", "create", "web", "--", "true"}, ExitFailure, "already taken"},
			{"start of a running sandbox", []string{"sandbox", "start", "web"}, ExitFailure, "already running"},
		}
		for _, tt := range tests {
			code, stdout, stderr := tg.cli(t, tt.args...)
			t.Logf("%s: exit %d: %s", tt.name, code, stderr)
			if code != tt.code || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d mentioning %s", tt.name, code, stdout, stderr, tt.code, tt.want)
			}
			if strings.Contains(stderr, "rpc error") {
				t.Errorf("%s: stderr shows gRPC's framing: %q", tt.name, stderr)
			}
		}
	})

	t.Run("stop and start resume on a fresh generation", func(t *testing.T) {
		out := tg.ok(t, "sandbox", "stop", "web")
		if !strings.Contains(out, " stopped ") {
			t.Errorf("stop printed:\n%s", out)
		}
		stopped := tg.sandbox(t, "web")
		if stopped.State != "stopped" || stopped.Connected {
			t.Errorf("after stop: %+v", stopped)
		}
		code, _, stderr := tg.cli(t, "sandbox", "exec", "web", "--", "true")
		if code != ExitFailure || !strings.Contains(stderr, "web") {
			t.Errorf("exec in a stopped sandbox: exit %d, stderr %q", code, stderr)
		}
		tg.ok(t, "sandbox", "start", "web")
		tg.waitFor(t, "web", "reconnected on a new generation", func(sb sandboxJSON) bool {
			return sb.State == "running" && sb.Connected && sb.LatestGen > stopped.LatestGen && sb.DeliveredGen == sb.LatestGen
		})
	})

	t.Run("get shows the details", func(t *testing.T) {
		out := tg.ok(t, "sandbox", "get", "web")
		for _, want := range []string{"Name:       web", "ID:         " + sb.ID, "Command:    sleep 3600", "Connected:  yes", "State:      running"} {
			if !strings.Contains(out, want) {
				t.Errorf("get lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("keys rotate publishes a key that activates later; --now activates it", func(t *testing.T) {
		var before []keyJSON
		if err := json.Unmarshal([]byte(tg.ok(t, "-o", "json", "keys", "list")), &before); err != nil || len(before) != 1 || before[0].State != "active" {
			t.Fatalf("keys of a new gateway: %+v (%v)", before, err)
		}
		out := tg.ok(t, "keys", "rotate")
		if !strings.Contains(out, "Published signing key") || !strings.Contains(out, "--now") || strings.Contains(out, before[0].KID) {
			t.Errorf("keys rotate printed %q", out)
		}
		states := func() map[string]keyJSON {
			var keys []keyJSON
			if err := json.Unmarshal([]byte(tg.ok(t, "-o", "json", "keys", "list")), &keys); err != nil {
				t.Fatal(err)
			}
			m := map[string]keyJSON{}
			for _, k := range keys {
				m[k.KID] = k
				if k.PublicKey == "" {
					t.Errorf("key %s has no public key", k.KID)
				}
			}
			return m
		}
		var next keyJSON
		for kid, k := range states() {
			if kid != before[0].KID {
				next = k
			}
		}
		if next.State != "next" || next.ActivatesAt == nil || states()[before[0].KID].State != "active" {
			t.Errorf("keys after rotate: %+v", states())
		}
		if code, _, stderr := tg.cli(t, "keys", "rotate"); code != ExitFailure || !strings.Contains(stderr, "--now") {
			t.Errorf("second keys rotate while one waits: exit %d, stderr %q", code, stderr)
		}
		out = tg.ok(t, "keys", "rotate", "--now")
		if !strings.Contains(out, "New active signing key "+next.KID) {
			t.Errorf("keys rotate --now printed %q, want the waiting key %s activated", out, next.KID)
		}
		after := states()
		if len(after) != 2 || after[before[0].KID].State != "verify" || after[next.KID].State != "active" {
			t.Errorf("keys after rotate --now: %+v", after)
		}
		if table := tg.ok(t, "keys", "list"); !strings.HasPrefix(table, "KID") || strings.Count(table, "\n") != 3 || !strings.Contains(table, "ACTIVATES") {
			t.Errorf("keys table:\n%s", table)
		}
	})

	t.Run("delete revokes the sandbox", func(t *testing.T) {
		out := tg.ok(t, "sandbox", "delete", "web")
		if !strings.Contains(out, "Deleted sandbox web") {
			t.Errorf("delete printed %q", out)
		}
		if code, _, _ := tg.cli(t, "sandbox", "get", "web"); code != ExitNotFound {
			t.Errorf("get after delete: exit %d, want ExitNotFound", code)
		}
		if _, err := os.Stat(filepath.Join(tg.state, "sandboxes", sb.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the sandbox's directory outlived it: %v", err)
		}
		if code, _, _ := tg.cli(t, "sandbox", "delete", "web"); code != ExitNotFound {
			t.Errorf("second delete: exit %d, want ExitNotFound", code)
		}
	})
}
