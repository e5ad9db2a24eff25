package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/test/binaries"
)

// gatewayProc is the real gateway binary running `serve`.
type gatewayProc struct {
	t     *testing.T
	state string
	cmd   *exec.Cmd
	log   *os.File
}

// startGatewayBinary starts `gateway serve` on state with 10 s tokens,
// plus extra flags, and waits until its operator API answers.
func startGatewayBinary(t *testing.T, state string, extra ...string) *gatewayProc {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(state), "gateway.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--state-dir", state, "--token-lifetime", "10s",
		"--sweep-interval", "100ms", "--heartbeat-interval", "1s", "--http-addr", "",
		"--supervisor", binaries.Supervisor, "--stop-grace", "1s"}, extra...)
	cmd := exec.Command(binaries.Gateway, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{t: t, state: state, cmd: cmd, log: logf}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := g.cli("sandbox", "list"); err == nil {
			return g
		}
		if time.Now().After(deadline) {
			g.kill()
			t.Fatalf("gateway did not come up; see %s", logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the gateway with SIGKILL, as a crash would. Only the gateway:
// its sandboxes are in sessions of their own and keep running.
func (g *gatewayProc) kill() {
	g.cmd.Process.Signal(syscall.SIGKILL)
	g.cmd.Wait()
	g.log.Close()
}

// stop ends the gateway with SIGTERM, as an operator would.
func (g *gatewayProc) stop() {
	g.cmd.Process.Signal(syscall.SIGTERM)
	g.cmd.Wait()
	g.log.Close()
}

func (g *gatewayProc) cli(args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(binaries.Gateway, append([]string{"--state-dir", g.state}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("gateway %v: %v: %s", args, err, errb.String())
	}
	return out.Bytes(), nil
}

type listed struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	LatestGen    uint64 `json:"latest_gen"`
	DeliveredGen uint64 `json:"delivered_gen"`
	Connected    bool   `json:"connected"`
}

func (g *gatewayProc) list() []listed {
	g.t.Helper()
	out, err := g.cli("sandbox", "list", "-o", "json")
	if err != nil {
		g.t.Fatal(err)
	}
	var all []listed
	if err := json.Unmarshal(out, &all); err != nil {
		g.t.Fatalf("list -o json: %v: %s", err, out)
	}
	return all
}

// genLedger records, for every sandbox, which jti each generation had in
// its token directory: a generation issued twice would show two. It also
// keeps every token's signature, to look for it in the logs.
type genLedger map[string]map[uint64]string

// seenSignatures holds the signature part of every token observed.
var seenSignatures = map[string]bool{}

// record notes that generation gen of sandbox id had jti, as seen in
// where, and fails the test if it had another.
func (l genLedger) record(t *testing.T, id string, gen uint64, jti, where string) {
	t.Helper()
	if l[id] == nil {
		l[id] = map[uint64]string{}
	}
	if prev, ok := l[id][gen]; ok && prev != jti {
		t.Fatalf("sandbox %s: generation %d issued twice (jti %s, and %s in %s)", id, gen, prev, jti, where)
	}
	l[id][gen] = jti
}

func (l genLedger) observe(t *testing.T, state string, ids []string) {
	for _, id := range ids {
		raw, err := tokendir.ReadToken(binaries.TokenDir(state, id))
		if err != nil {
			continue // a directory being replaced; the next look sees it
		}
		tok, err := auth.ParseUnverified(string(raw))
		if err != nil {
			t.Fatalf("sandbox %s: unparseable token in its directory: %v", id, err)
		}
		seenSignatures[string(raw[strings.LastIndexByte(string(raw), '.')+1:])] = true
		l.record(t, id, tok.Gen(), tok.JTI(), "its token directory")
	}
}

func TestGatewayKilledMidSweepRecoversEverySandbox(t *testing.T) {
	const sandboxes = 12
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SANDKEY_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (set SANDKEY_TEST_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	dir := binaries.TempDir(t, "sk")
	state := filepath.Join(dir, "state")
	g := startGatewayBinary(t, state)
	var ids []string
	t.Cleanup(func() {
		if g != nil {
			for _, id := range ids {
				g.cli("sandbox", "delete", id)
			}
			g.kill()
		}
		if t.Failed() || os.Getenv("SANDKEY_KEEP_LOGS") != "" {
			logs, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			os.WriteFile(filepath.Join(os.TempDir(), "sandkey-crash-test-gateway.log"), logs, 0o600)
			t.Logf("gateway log kept at %s", filepath.Join(os.TempDir(), "sandkey-crash-test-gateway.log"))
		}
	})
	t.Logf("gateway up")
	for i := range sandboxes {
		if _, err := g.cli("sandbox", "create", fmt.Sprintf("sb%d", i), "--start", "--", "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	for _, sb := range g.list() {
		ids = append(ids, sb.ID)
	}
	t.Logf("sandboxes created")
	ledger := genLedger{}
	allFresh := func(g *gatewayProc) bool {
		ledger.observe(t, state, ids)
		for _, sb := range g.list() {
			if !sb.Connected || sb.DeliveredGen != sb.LatestGen {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, "every sandbox registered", func() bool { return allFresh(g) },
		func() string { return fmt.Sprintf("%+v", g.list()) })

	// Three crashes at random moments while tokens rotate (every ~5 s each,
	// jittered, so some sweep is usually under way), the last one followed
	// by a downtime longer than a token lives.
	for crash := range 3 {
		wait := time.Duration(2000+rng.IntN(4000)) * time.Millisecond
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			ledger.observe(t, state, ids)
			time.Sleep(25 * time.Millisecond)
		}
		g.kill()
		down := 500 * time.Millisecond
		if crash == 2 {
			down = 12 * time.Second // past the 10 s lifetime
		}
		t.Logf("crash %d after %s, down %s", crash, wait, down)
		time.Sleep(down)
		if err := checkStore(filepath.Join(state, "sandkey.db")); err != nil {
			t.Fatalf("store after crash %d: %v", crash, err)
		}
		g = startGatewayBinary(t, state)
		start := time.Now()
		waitFor(t, 20*time.Second, "every sandbox holds its newest token again", func() bool { return allFresh(g) },
			func() string { return fmt.Sprintf("%+v", g.list()) })
		t.Logf("recovered in %s", time.Since(start).Round(time.Millisecond))
	}
	// No token ever reached a log: the gateway's, or any supervisor's.
	logs := []string{filepath.Join(dir, "gateway.log")}
	for _, id := range ids {
		logs = append(logs, filepath.Join(state, "sandboxes", id, "driver", "sandbox.log"))
	}
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(data, []byte(`"jti"`)) {
			t.Fatalf("log %s: %v; want one that names tokens by jti", path, err)
		}
		for sig := range seenSignatures {
			if strings.Contains(string(data), sig) {
				t.Fatalf("a token (signature %s...) appears in %s", sig[:12], path)
			}
		}
	}
	t.Logf("%d tokens looked for in %d logs", len(seenSignatures), len(logs))
	// Every token in the directories verifies now, against the gateway's keys.
	for _, id := range ids {
		raw, err := tokendir.ReadToken(binaries.TokenDir(state, id))
		if err != nil {
			t.Fatal(err)
		}
		jwksRaw, _ := tokendir.ReadFile(binaries.TokenDir(state, id), tokendir.JWKSFile)
		keys, err := auth.ParseJWKS(jwksRaw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (&auth.Verifier{Keys: keys}).Verify(string(raw), id); err != nil {
			t.Fatalf("sandbox %s after recovery: %v", id, err)
		}
	}
}

// checkStore opens the store the killed gateway left and runs its
// integrity check.
func checkStore(path string) error {
	st, err := store.Open(context.Background(), path, store.Options{ThoroughCheck: true})
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Check(context.Background())
}

func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s; state: %s", bound, what, state())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
