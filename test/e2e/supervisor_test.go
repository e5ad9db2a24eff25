package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

// runSupervisor runs the real binary with only the given environment and
// returns its exit code and stderr. A hang fails the test.
func runSupervisor(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaries.Supervisor, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "SANDKEY_VM_INIT=off"}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("supervisor %v hung; stderr: %s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func TestSupervisorRefusesWhatItCannotServe(t *testing.T) {
	dir := t.TempDir()
	tokenDir := filepath.Join(dir, "auth")
	os.Mkdir(tokenDir, 0o700)
	aFile := filepath.Join(dir, "file")
	os.WriteFile(aFile, []byte("x"), 0o600)
	sockDir, _ := os.MkdirTemp("", "sk")
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "gw.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	base := []string{"SANDKEY_SANDBOX_ID=sb-1", "SANDKEY_TOKEN_DIR=" + tokenDir, "SANDKEY_GATEWAY=unix://" + sock}
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no command", append(base, "SANDKEY_AUTH_MODE=dir"), nil, supervisor.ExitUsage, "no workload"},
		{"no mode", base, []string{"--", "true"}, supervisor.ExitConfig, "no auth mode"},
		{"unknown mode", append(base, "SANDKEY_AUTH_MODE=magic"), []string{"--", "true"}, supervisor.ExitConfig, "is unknown; want dir, static or k8s-sa"},
		{"k8s-sa on a unix socket", append(base, "SANDKEY_AUTH_MODE=k8s-sa"), []string{"--", "true"}, supervisor.ExitConfig, "want a tls:// gateway address"},
		{"k8s-sa without its token directory", append(base, "SANDKEY_AUTH_MODE=k8s-sa", "SANDKEY_GATEWAY=tls://127.0.0.1:1", "SANDKEY_TOKEN_DIR="+filepath.Join(dir, "nope")), []string{"--", "true"}, supervisor.ExitConfig, "does not exist"},
		{"gateway CA that is no PEM", append(base, "SANDKEY_AUTH_MODE=k8s-sa", "SANDKEY_GATEWAY=tls://127.0.0.1:1", "SANDKEY_GATEWAY_CA=junk"), []string{"--", "true"}, supervisor.ExitConfig, "no PEM certificate"},
		{"no sandbox id", []string{"SANDKEY_AUTH_MODE=dir", "SANDKEY_TOKEN_DIR=" + tokenDir}, []string{"--", "true"}, supervisor.ExitConfig, "no sandbox id"},
		{"missing token dir", append(base, "SANDKEY_AUTH_MODE=dir", "SANDKEY_TOKEN_DIR="+filepath.Join(dir, "nope")), []string{"--", "true"}, supervisor.ExitConfig, "does not exist"},
		{"token dir is a file", append(base, "SANDKEY_AUTH_MODE=dir", "SANDKEY_TOKEN_DIR="+aFile), []string{"--", "true"}, supervisor.ExitConfig, "not a directory"},
		{"gateway socket missing", append(base, "SANDKEY_AUTH_MODE=dir", "SANDKEY_GATEWAY=unix://"+filepath.Join(dir, "gone.sock")), []string{"--", "true"}, supervisor.ExitUnavailable, "gone.sock"},
		{"gateway socket not a socket", append(base, "SANDKEY_AUTH_MODE=dir", "SANDKEY_GATEWAY=unix://"+aFile), []string{"--", "true"}, supervisor.ExitUnavailable, "not a socket"},
		{"static without a token", append(base, "SANDKEY_AUTH_MODE=static"), []string{"--", "true"}, supervisor.ExitConfig, "exactly one of"},
		{"static with garbage", append(base, "SANDKEY_AUTH_MODE=static", "SANDKEY_TOKEN=garbage"), []string{"--", "true"}, supervisor.ExitConfig, "static token"},
		{"unknown user", append(base, "SANDKEY_AUTH_MODE=dir"), []string{"--user", "sandkey-no-such-user", "--", "true"}, supervisor.ExitConfig, "no user sandkey-no-such-user"},
		{"unknown group", append(base, "SANDKEY_AUTH_MODE=dir"), []string{"--user", "0:sandkey-no-such-group", "--", "true"}, supervisor.ExitConfig, "no group sandkey-no-such-group"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runSupervisor(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestSupervisorPassesTheWorkloadsExitCode(t *testing.T) {
	sockDir, _ := os.MkdirTemp("", "sk")
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "gw.sock")
	l, err := net.Listen("unix", sock) // a socket nobody answers: the session retries, the workload runs
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	env := []string{"SANDKEY_AUTH_MODE=dir", "SANDKEY_SANDBOX_ID=sb-1", "SANDKEY_TOKEN_DIR=" + t.TempDir(), "SANDKEY_GATEWAY=unix://" + sock}
	for _, tc := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 42", 42}, {"kill -KILL $$", 137}} {
		if code, stderr := runSupervisor(t, env, "--", "/bin/sh", "-c", tc.script); code != tc.code {
			t.Errorf("workload %q: supervisor exited %d, want %d; stderr %s", tc.script, code, tc.code, stderr)
		}
	}
}

// TestSupervisorLogNamesTheSandboxOnce reads the real supervisor's JSON
// log after a registration and a rotation: every line names the sandbox,
// and no line names it twice (each part adding the key again once did).
func TestSupervisorLogNamesTheSandboxOnce(t *testing.T) {
	h := newHarness(t, 20*time.Second)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "logs", Start: true,
		Spec: gateway.Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "supervisor registered", func() bool { return h.gw.Sessions().Connected(sb.ID) })
	gen, err := h.gw.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(5*time.Second, "rotation acknowledged", func() bool {
		got, _ := h.gw.Get(ctx, sb.ID)
		return got.DeliveredGen == gen
	})
	data, err := os.ReadFile(filepath.Join(h.dir, "state", "sandboxes", sb.ID, "driver", "sandbox.log"))
	if err != nil {
		t.Fatal(err)
	}
	key := `"sandbox":"` + sb.ID + `"`
	lines := 0
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue // the workload's own output
		}
		lines++
		if n := strings.Count(line, `"sandbox":`); n != 1 || !strings.Contains(line, key) {
			t.Errorf("log line names the sandbox %d times, want once as %s: %s", n, key, line)
		}
	}
	if lines == 0 {
		t.Fatalf("no JSON log line in the supervisor's log:\n%s", data)
	}
}
