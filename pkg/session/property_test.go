package session

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/source"
)

// testSeed returns SANDKEY_TEST_SEED, or a fresh seed, and logs it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SANDKEY_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SANDKEY_TEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with SANDKEY_TEST_SEED=%d)", seed, seed)
	return seed
}

// TestNoTokenIsLostAcrossRandomSteps drives two supervisors through random
// connects, disconnects (theirs and the gateway's) and rotations; whenever
// a supervisor is running, it ends up holding the newest generation, the
// gateway records it as delivered, and its generation never goes back.
func TestNoTokenIsLostAcrossRandomSteps(t *testing.T) {
	const steps = 1000
	rng := rand.New(rand.NewPCG(testSeed(t), 0x5a4d))
	e := newEnv(t, envConfig{heartbeat: 10 * time.Millisecond})

	type supervisor struct {
		id      string
		src     *source.Source
		client  *runningClient
		running bool
		lastGen uint64
	}
	var sups []*supervisor
	for _, id := range []string{"sb-p1", "sb-p2"} {
		target, tok := e.sandbox(id)
		src := e.newSource(id, tok)
		sups = append(sups, &supervisor{id: id, src: src, running: true, lastGen: tok.Gen(),
			client: e.startClient(ClientConfig{Target: target, SandboxID: id, Source: src,
				Backoff: Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}})})
	}
	latest := func(id string) uint64 {
		tok, err := e.authority.Latest(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Gen()
	}
	settle := func(step int, s *supervisor) {
		want := latest(s.id)
		deadline := time.Now().Add(10 * time.Second)
		for genOf(s.src) != want || e.authority.Delivered(s.id) != want {
			if time.Now().After(deadline) {
				_, _, err := s.client.State()
				t.Fatalf("step %d: %s holds gen %d, delivered %d, latest %d (last error %v)",
					step, s.id, genOf(s.src), e.authority.Delivered(s.id), want, err)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	counts := map[string]int{}
	for step := 0; step < steps; step++ {
		s := sups[rng.IntN(len(sups))]
		var action string
		switch rng.IntN(6) {
		case 0, 1:
			action = "rotate"
			e.mint(s.id)
			e.srv.Push(s.id)
		case 2:
			action = "rotate twice"
			e.mint(s.id)
			e.mint(s.id)
			e.srv.Push(s.id)
		case 3:
			action = "supervisor stops"
			if s.running {
				s.client.stop()
				s.running = false
			}
		case 4:
			action = "supervisor starts"
			if !s.running {
				s.client.start()
				s.running = true
			}
		case 5:
			action = "gateway disconnects"
			e.srv.Disconnect(s.id)
		}
		counts[action]++
		for _, s := range sups {
			if s.running {
				settle(step, s)
			}
			if g := genOf(s.src); g < s.lastGen {
				t.Fatalf("step %d (%s): %s went back from gen %d to %d", step, action, s.id, s.lastGen, g)
			}
			s.lastGen = genOf(s.src)
		}
	}
	for _, s := range sups {
		if !s.running {
			s.client.start()
		}
		settle(steps, s)
	}
	t.Logf("actions: %v; pushes %v, resends %v", counts, metricValue(e.srv.metrics.pushes), metricValue(e.srv.metrics.resends))
}
