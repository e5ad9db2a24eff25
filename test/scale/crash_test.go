package scale

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// crashSandboxes is how many sandboxes share the gateway that is killed
// (SANDKEY_SCALE_SANDBOXES overrides it, to probe further).
var crashSandboxes = 400

func init() {
	if n, err := strconv.Atoi(os.Getenv("SANDKEY_SCALE_SANDBOXES")); err == nil && n > 0 {
		crashSandboxes = n
	}
}

// A gateway SIGKILLed at random moments while hundreds of tokens rotate
// (a sweep is usually under way: 400 sandboxes rotating every 5-6 s), and
// every other time again while it starts (reconciling, re-minting and
// writing them all), comes back with every supervisor on its newest token
// and a session, and no supervisor ever accepted two tokens of one
// generation: its log, which names every token it accepts by gen and jti,
// is the ledger, and it sees pushes as well as directory writes. Measured
// on the 2-core test VM (10 s tokens, 2 s heartbeats, every supervisor
// busy): 400 sandboxes ready 0.8-1.3 s after a restart, 1,000 in 3-5 s,
// with 5 goroutines and 2 descriptors per sandbox.
func TestGatewayKilledMidSweepIssuesNoGenerationTwiceAtScale(t *testing.T) {
	if os.Geteuid() != 0 {
		testmain.SkipIfMissing(t, errors.New("the scale test runs its gateway as a user of its own: it needs root"), true)
	}
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SANDKEY_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (set SANDKEY_TEST_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	setInotifyInstances(t, 4*crashSandboxes)

	h := newHost(t)
	h.start()
	client := h.admin()
	h.createSandboxes(client, crashSandboxes)
	fresh := func() bool {
		for _, sb := range h.list(client) {
			if !sb.GetConnected() || sb.GetDeliveredGen() != sb.GetLatestGen() {
				return false
			}
		}
		return true
	}
	if !waitFor(t, 90*time.Second, "every supervisor holds a session and its newest token", fresh) {
		t.FailNow()
	}
	for crash := range 4 {
		wait := time.Duration(2000+rng.IntN(5000)) * time.Millisecond
		time.Sleep(wait)
		h.cmd.Process.Kill()
		<-h.cmdDone
		t.Logf("crash %d after %s", crash, wait)
		// Every other crash is followed by one while the gateway starts:
		// reconciling, re-minting and writing hundreds of sandboxes.
		if crash%2 == 1 {
			h.spawn()
			early := time.Duration(100+rng.IntN(1500)) * time.Millisecond
			time.Sleep(early)
			h.cmd.Process.Kill()
			<-h.cmdDone
			t.Logf("crash %d again %s into the start", crash, early)
		}
		restarted := time.Now()
		readyAt := h.start()
		client = h.admin()
		if !waitFor(t, 60*time.Second, "every supervisor back on its newest token", fresh) {
			break
		}
		t.Logf("ready %s after the restart; every supervisor on its newest token %s after",
			readyAt.Sub(restarted).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	}
	for _, line := range strings.Split(h.get("/metrics"), "\n") {
		for _, name := range []string{"process_open_fds ", "process_max_fds ", "go_goroutines ", "process_resident_memory_bytes "} {
			if strings.HasPrefix(line, name) {
				t.Logf("gateway with %d sandboxes: %s", crashSandboxes, line)
			}
		}
	}
	accepted := 0
	for _, sb := range h.list(client) {
		n, err := checkLedger(h.sandboxFile(sb.GetId(), "driver", "sandbox.log"))
		if err != nil {
			t.Errorf("sandbox %s: %v", sb.GetName(), err)
		}
		accepted += n
	}
	t.Logf("%d tokens accepted by %d supervisors, no generation twice", accepted, crashSandboxes)
}

// checkLedger reads a supervisor's log and fails when it accepted two
// tokens of one generation (two jtis); it returns how many it accepted.
func checkLedger(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	jtis := map[uint64]string{}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue
		}
		var entry struct {
			Msg string `json:"msg"`
			Gen uint64 `json:"gen"`
			JTI string `json:"jti"`
		}
		if json.Unmarshal(line, &entry) != nil || entry.Msg != "token accepted" {
			continue
		}
		n++
		if prev, ok := jtis[entry.Gen]; ok && prev != entry.JTI {
			return n, fmt.Errorf("generation %d accepted twice: jti %s and %s", entry.Gen, prev, entry.JTI)
		}
		jtis[entry.Gen] = entry.JTI
	}
	return n, sc.Err()
}
