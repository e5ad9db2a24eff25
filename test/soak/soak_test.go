// Package soak runs the real gateway binary with N sandboxes on the
// process driver and short-lived tokens, under a seeded chaos loop, while
// a checker asks every second, for every sandbox, whether its supervisor
// holds a token the gateway accepts. It proves sandkey's claim that no
// token is ever lost, and writes what it measured.
//
// # The chaos loop (chaos_test.go)
//
// At random, seeded and printed intervals it picks one event:
//   - gateway crash: SIGKILL the gateway, open its store and run the
//     integrity check, stay down (briefly, or longer than a token lives),
//     restart it;
//   - session cut: SIGSTOP some supervisors, SIGCONT them seconds later
//     (past three heartbeats, the gateway ends their sessions);
//   - stop and resume past expiry: `sandbox stop`, then `sandbox start`
//     more than a token lifetime later;
//   - key rotation: `gateway keys rotate`;
//   - delete and recreate: `sandbox delete` (keeping the sandbox's last
//     tokens), then `sandbox create` under the same name.
//
// # The checker (check_test.go)
//
// A sandbox's supervisor holds an accepted token when: its process is
// alive; its status file names a (gen, jti) that the gateway issued (seen
// in the token directory, whose current and previous generations the
// checker records); that token's signature verifies against the JWKS the
// gateway serves on /jwks.json (the last one fetched while it is down);
// it has not expired (exp strictly after the sample, no leeway); and its
// gen is at least the gateway's latest generation minus one (`sandbox list
// -o json`, or the newest seen in the directory, whichever is higher).
//
// # Recovery windows (account_test.go)
//
// Some events make a token legitimately unacceptable for a while: nobody
// can mint while the gateway is down, a stopped process cannot take a new
// token, a sandbox being started has not read its token yet. A sample
// inside such a window is reported apart; the availability target (100%)
// applies outside them. Each window lasts from the event's start to a
// fixed bound (RecoveryBound, 5 s) after the event's end:
//   - gateway crash: from the SIGKILL until RecoveryBound after the
//     restarted gateway answers its operator API, for every sandbox;
//   - session cut: from the SIGSTOP until RecoveryBound after the SIGCONT,
//     for that sandbox;
//   - start (resume, recreate, first start): from the command until
//     RecoveryBound after it returned, for that sandbox.
//
// Key rotations get no window: they must cost nothing. The actual
// recovery of every window is also measured precisely: from the event's
// end, every affected sandbox is polled every 50 ms until it holds an
// accepted token again.
//
// # Other checks
//
// Generations issued twice: every (sandbox, gen) is recorded with its jti
// from the directories and the status files; a second jti is a double.
// Store integrity: after every crash, before the restart. Tokens of
// deleted sandboxes: see deleted_test.go.
//
// `make soak` runs it for SANDKEY_SOAK_DURATION (10 min) with 50
// sandboxes and writes bench/SOAK.md; without that variable, `make test`
// runs a short version (8 sandboxes, 45 s, every kind of event once or
// more).
package soak

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sandkey/sandkey/test/binaries"
)

func TestMain(m *testing.M) { binaries.RunTests(m) }

// RecoveryBound is how long after a disturbing event ends its recovery
// window lasts.
const RecoveryBound = 5 * time.Second

// config is one soak's settings.
type config struct {
	Sandboxes int
	Lifetime  time.Duration
	Duration  time.Duration
	Seed      uint64
	Short     bool   // the version `make test` runs
	Report    string // where to write the Markdown report; "" for none
}

// configFromEnv reads SANDKEY_SOAK_DURATION (its presence selects the
// full soak), SANDKEY_SOAK_SANDBOXES, SANDKEY_SOAK_LIFETIME,
// SANDKEY_SOAK_SEED and SANDKEY_SOAK_REPORT.
func configFromEnv(t *testing.T) config {
	t.Helper()
	c := config{Sandboxes: 8, Lifetime: 10 * time.Second, Duration: 45 * time.Second, Short: true,
		Seed: uint64(time.Now().UnixNano()), Report: os.Getenv("SANDKEY_SOAK_REPORT")}
	if v := os.Getenv("SANDKEY_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SANDKEY_SOAK_DURATION=%q: want a duration of at least 10s", v)
		}
		c.Duration, c.Short, c.Sandboxes = d, false, 50
	}
	if v := os.Getenv("SANDKEY_SOAK_SANDBOXES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > 500 {
			t.Fatalf("SANDKEY_SOAK_SANDBOXES=%q: want 2 to 500", v)
		}
		c.Sandboxes = n
	}
	if v := os.Getenv("SANDKEY_SOAK_LIFETIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SANDKEY_SOAK_LIFETIME=%q: want a duration of at least 10s", v)
		}
		c.Lifetime = d
	}
	if v := os.Getenv("SANDKEY_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SANDKEY_SOAK_SEED=%q: want an unsigned integer", v)
		}
		c.Seed = s
	}
	return c
}

func TestSoakNoTokenIsLostUnderChaos(t *testing.T) {
	cfg := configFromEnv(t)
	t.Logf("soak: seed %d (SANDKEY_SOAK_SEED=%d replays the same chaos), %d sandboxes, token lifetime %s, duration %s",
		cfg.Seed, cfg.Seed, cfg.Sandboxes, cfg.Lifetime, cfg.Duration)
	s := newSoak(t, cfg)
	res := s.run(context.Background())
	fmt.Println(res.text())
	if cfg.Report != "" {
		if err := os.WriteFile(cfg.Report, []byte(res.markdown()), 0o644); err != nil {
			t.Errorf("write %s: %v", cfg.Report, err)
		} else {
			t.Logf("report written to %s", cfg.Report)
		}
	}
	for _, f := range res.failures() {
		t.Error(f)
	}
}
