package gatewaycmd

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/test/fullfs"
)

// TestRotateSucceedsWhenOnlyTheSessionDeliveredTheToken mounts a full
// tmpfs (no inode left) over a running sandbox's token directory: the generation is
// committed, the write fails with ENOSPC, the supervisor acknowledges the
// token over its session, and `sandbox rotate` says so and exits 0. Once
// the sandbox is stopped (no session), the same failure exits 1.
func TestRotateSucceedsWhenOnlyTheSessionDeliveredTheToken(t *testing.T) {
	clearAdminEnv(t)
	tg := startTestGateway(t)
	tg.ok(t, "sandbox", "create", "web", "--start", "-e", roleEnv+"="+roleSupervisor, "-e", "GORACE="+noExitSleep, "--", "sleep", "3600")
	sb := tg.waitFor(t, "web", "supervisor connected", func(sb sandboxJSON) bool { return sb.Connected && sb.DeliveredGen == 1 })

	authDir := filepath.Join(tg.state, "tokens", sb.ID)
	fullfs.MountFull(t, authDir)

	code, stdout, stderr := tg.cli(t, "-o", "json", "sandbox", "rotate", "web")
	if code != ExitOK {
		t.Fatalf("rotate delivered over the session: exit %d, stderr %q; want 0", code, stderr)
	}
	var res struct {
		Gen        uint64 `json:"gen"`
		Written    bool   `json:"written"`
		Delivered  bool   `json:"delivered"`
		WriteError string `json:"write_error"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("rotate -o json printed %q: %v", stdout, err)
	}
	if res.Gen != 2 || res.Written || !res.Delivered || !strings.Contains(res.WriteError, "no space left") {
		t.Errorf("rotate result %+v; want gen 2 delivered, not written, with the write's cause", res)
	}
	if !strings.Contains(stderr, "writing generation 2 into the token directory failed") || !strings.Contains(stderr, "delivered over its session") {
		t.Errorf("stderr does not say what happened: %q", stderr)
	}
	if got := tg.sandbox(t, "web"); got.DeliveredGen != 2 || got.WrittenGen != 1 {
		t.Errorf("after rotate: delivered %d, written %d; want 2, 1", got.DeliveredGen, got.WrittenGen)
	}

	tg.ok(t, "sandbox", "stop", "web")
	code, _, stderr = tg.cli(t, "sandbox", "rotate", "web")
	if code != ExitFailure || !strings.Contains(stderr, "reached the sandbox nowhere") {
		t.Errorf("rotate of a stopped sandbox whose directory is full: exit %d, stderr %q; want 1 saying it reached the sandbox nowhere", code, stderr)
	}
}

// An exec in a sandbox that is created but never started (no session)
// fails with exit 1 and says how to look at it and start it.
func TestExecInASandboxWithoutSessionSaysHowToStartIt(t *testing.T) {
	clearAdminEnv(t)
	tg := startTestGateway(t)
	tg.ok(t, "sandbox", "create", "idle", "--", "sleep", "3600")
	code, _, stderr := tg.cli(t, "sandbox", "exec", "idle", "--", "true")
	if code != ExitFailure {
		t.Fatalf("exec without a session: exit %d, stderr %q; want 1", code, stderr)
	}
	for _, want := range []string{"has no session", "gateway sandbox get idle", "gateway sandbox start idle"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
}
