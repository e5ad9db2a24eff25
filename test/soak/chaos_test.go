package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/test/binaries"
)

// Kinds of chaos events.
const (
	evCrash  = "gateway crash"
	evCut    = "session cut"
	evResume = "stop, resume past expiry"
	evKeys   = "key rotation"
	evDelete = "delete and recreate"
	evStart  = "start" // the window of a start, first or resumed
)

var eventKinds = []string{evCrash, evCut, evResume, evKeys, evDelete}

// slot is one sandbox name of the soak; its id changes when it is
// deleted and recreated.
type slot struct {
	name    string
	id      string
	running bool // started, not stopped or deleted: it must hold a token
	busy    bool // an event holds it (frozen, stopped, being recreated)
	frozen  int  // pid of its SIGSTOPped supervisor, 0 if none
}

// event is one chaos event as it happened.
type event struct {
	n        int
	at       time.Duration // since the soak began
	kind     string
	detail   string
	slots    []string
	affected int           // sandboxes whose recovery was measured
	recovery time.Duration // from the event's end to the last affected sandbox holding an accepted token
	lost     []string      // sandboxes not recovered within the watch
	problem  string        // what went wrong with the event itself
}

// action is something the chaos loop does later: SIGCONT a supervisor,
// resume a sandbox.
type action struct {
	due  time.Time
	do   func() bool // false: not possible now (gateway down), try again
	name string
}

type soak struct {
	t   *testing.T
	cfg config
	rng *rand.Rand
	dir string
	gw  *gatewayProc

	ledger *ledger
	tally  *tally
	check  *checker

	mu     sync.Mutex // guards slots and events against the checker and watchers
	slots  []*slot
	events []*event

	begin    time.Time
	pending  []action
	watchers sync.WaitGroup

	crashes         []string // store integrity result of each crash
	deleted         []deletedToken
	deletedTries    int
	deletedAccepted []string
	problems        []string
	converged       string // the final convergence: "" when every sandbox converged
}

func newSoak(t *testing.T, cfg config) *soak {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	s := &soak{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)), dir: dir,
		gw: newGatewayProc(dir, cfg.Lifetime), ledger: newLedger(), tally: newTally(RecoveryBound)}
	s.check = newChecker(s.gw, s.ledger)
	t.Cleanup(s.cleanup)
	return s
}

// printf prints a line of the chaos log, stamped with the soak's clock.
func (s *soak) printf(format string, args ...any) {
	line := fmt.Sprintf("[%7.1fs] %s", time.Since(s.begin).Seconds(), fmt.Sprintf(format, args...))
	fmt.Println("soak: " + line)
}

func (s *soak) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	s.printf("PROBLEM: %s", p)
	s.mu.Lock()
	s.problems = append(s.problems, p)
	s.mu.Unlock()
}

// run is the whole soak: set up, chaos and checks, teardown.
func (s *soak) run(ctx context.Context) *results {
	s.begin = time.Now()
	s.printf("seed %d; %d sandboxes; token lifetime %s; %s of chaos", s.cfg.Seed, s.cfg.Sandboxes, s.cfg.Lifetime, s.cfg.Duration)
	if err := s.gw.start(ctx); err != nil {
		s.t.Fatal(err)
	}
	for i := range s.cfg.Sandboxes {
		sl := &slot{name: fmt.Sprintf("sb%03d", i)}
		s.slots = append(s.slots, sl)
		if err := s.createAndStart(ctx, sl, 0); err != nil {
			s.t.Fatal(err)
		}
	}
	s.checker(ctx, true) // one round before the clock starts
	s.printf("%d sandboxes created and started", len(s.slots))

	checkCtx, stopChecker := context.WithCancel(ctx)
	var checkerDone sync.WaitGroup
	checkerDone.Go(func() { s.checkerLoop(checkCtx) })

	if err := s.chaos(ctx); err != nil {
		s.problem("chaos stopped: %v", err)
	}
	s.drainPending()
	s.watchers.Wait()
	s.finalConvergence(ctx)
	s.finalDeletedChecks(ctx)
	stopChecker()
	checkerDone.Wait()
	elapsed := time.Since(s.begin)
	s.teardown(ctx)
	return s.results(elapsed)
}

// createAndStart creates sl's sandbox, started, and opens its start window.
func (s *soak) createAndStart(ctx context.Context, sl *slot, eventN int) error {
	w := s.tally.open(evStart, sl.name, time.Now(), eventN)
	out, err := s.gw.cli(ctx, "sandbox", "create", sl.name, "--start", "-o", "json", "--", "sleep", "1000000")
	ended := time.Now()
	s.tally.close(w, ended)
	if err != nil {
		return err
	}
	var created struct{ ID string }
	if err := json.Unmarshal(out, &created); err != nil || created.ID == "" {
		return fmt.Errorf("sandbox create -o json: %v: %s", err, out)
	}
	s.mu.Lock()
	sl.id, sl.running = created.ID, true
	s.mu.Unlock()
	return nil
}

// counted returns the (name, id) of every sandbox that must hold a token.
func (s *soak) counted() [][2]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][2]string
	for _, sl := range s.slots {
		if sl.running && sl.id != "" {
			out = append(out, [2]string{sl.name, sl.id})
		}
	}
	return out
}

// checkerLoop samples every sandbox every second until ctx ends.
func (s *soak) checkerLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.checker(ctx, false)
		}
	}
}

// checker takes one sample of every counted sandbox; warmup samples are
// not tallied.
func (s *soak) checker(ctx context.Context, warmup bool) {
	s.check.refresh(ctx)
	for _, c := range s.counted() {
		v := s.check.judge(c[1])
		if !warmup {
			s.tally.add(sample{at: time.Now(), slot: c[0], ok: v.ok, why: v.why})
		}
	}
}

// chaos runs events at random, seeded intervals until the duration ends.
// The short version runs every kind of event first, in a seeded order.
func (s *soak) chaos(ctx context.Context) error {
	end := time.Now().Add(s.cfg.Duration)
	minGap, maxGap := 3*time.Second, 15*time.Second
	var queue []string
	if s.cfg.Short {
		minGap, maxGap = 2*time.Second, 5*time.Second
		queue = slices.Clone(eventKinds)
		s.rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
	}
	next := time.Now().Add(s.gap(minGap, maxGap))
	for time.Now().Before(end) {
		s.runDue()
		if time.Now().After(next) {
			kind := s.pick()
			if len(queue) > 0 {
				kind, queue = queue[0], queue[1:]
			}
			if err := s.event(ctx, kind); err != nil {
				return err
			}
			next = time.Now().Add(s.gap(minGap, maxGap))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (s *soak) gap(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// pick draws an event kind: crashes are the rarest, cuts the commonest.
func (s *soak) pick() string {
	weights := map[string]int{evCrash: 15, evCut: 30, evResume: 20, evKeys: 15, evDelete: 20}
	n := s.rng.IntN(100)
	for _, k := range eventKinds {
		if n < weights[k] {
			return k
		}
		n -= weights[k]
	}
	return evCut
}

// newEvent records an event and prints it.
func (s *soak) newEvent(kind, detail string, slots ...string) *event {
	s.mu.Lock()
	e := &event{n: len(s.events) + 1, at: time.Since(s.begin), kind: kind, detail: detail, slots: slots}
	s.events = append(s.events, e)
	s.mu.Unlock()
	s.printf("#%d %s: %s", e.n, kind, detail)
	return e
}

// idle returns up to n running sandboxes no event holds, at random.
func (s *soak) idle(n int) []*slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var free []*slot
	for _, sl := range s.slots {
		if sl.running && !sl.busy {
			free = append(free, sl)
		}
	}
	s.rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	return free[:min(n, len(free))]
}

// event runs one chaos event; an error means the soak cannot go on (the
// gateway does not restart).
func (s *soak) event(ctx context.Context, kind string) error {
	switch kind {
	case evCrash:
		return s.crash(ctx)
	case evCut:
		s.cut()
	case evResume:
		s.stopResume(ctx)
	case evKeys:
		e := s.newEvent(evKeys, "gateway keys rotate")
		out, err := s.gw.cli(ctx, "keys", "rotate")
		if err != nil && strings.Contains(err.Error(), "--now") {
			// A published key still waits: activate it now instead.
			e.detail = "gateway keys rotate --now"
			out, err = s.gw.cli(ctx, "keys", "rotate", "--now")
		}
		if err != nil {
			e.problem = err.Error()
			s.problem("event #%d: %v", e.n, err)
		} else {
			e.detail += ": " + strings.TrimSpace(string(out))
		}
	case evDelete:
		s.deleteRecreate(ctx)
	}
	return nil
}

// crash kills the gateway, checks its store, keeps it down (longer than
// a token lives, now and then, in the full soak), and restarts it.
func (s *soak) crash(ctx context.Context) error {
	down := time.Duration(200+s.rng.IntN(2800)) * time.Millisecond
	if !s.cfg.Short && s.rng.IntN(3) == 0 {
		down = s.cfg.Lifetime + 2*time.Second
	}
	e := s.newEvent(evCrash, fmt.Sprintf("SIGKILL, down %s", down.Round(time.Millisecond)))
	w := s.tally.open(evCrash, "", time.Now(), e.n)
	s.gw.kill()
	killed := time.Now()
	result := "ok"
	if st, err := s.gw.openStore(ctx); err != nil {
		result = err.Error()
		s.problem("store after crash #%d: %v", e.n, err)
	} else {
		deleted := s.deletedSoFar()
		accepted, err := verdictsInStore(ctx, st, deleted)
		st.Close()
		if err != nil {
			s.problem("event #%d: %v", e.n, err)
		}
		s.acceptedDeleted(accepted)
		s.mu.Lock()
		s.deletedTries += len(deleted)
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.crashes = append(s.crashes, fmt.Sprintf("crash #%d: %s", e.n, result))
	s.mu.Unlock()
	time.Sleep(time.Until(killed.Add(down)))
	if err := s.gw.start(ctx); err != nil {
		return fmt.Errorf("restart after crash #%d: %w", e.n, err)
	}
	ready := time.Now()
	s.tally.close(w, ready)
	e.detail += fmt.Sprintf("; serving again %s after the kill", ready.Sub(killed).Round(time.Millisecond))
	var affected []string
	for _, c := range s.counted() {
		affected = append(affected, c[1])
	}
	s.watch(e, ready, affected)
	return nil
}

// cut freezes some supervisors (SIGSTOP) and thaws them (SIGCONT) 1-8 s
// later: past three heartbeats the gateway ends their sessions.
func (s *soak) cut() {
	hold := time.Duration(1000+s.rng.IntN(7000)) * time.Millisecond
	chosen := s.idle(1 + s.rng.IntN(max(1, len(s.slots)/8)))
	if len(chosen) == 0 {
		return
	}
	var names []string
	for _, sl := range chosen {
		names = append(names, sl.name)
	}
	e := s.newEvent(evCut, fmt.Sprintf("SIGSTOP %s for %s", strings.Join(names, ", "), hold.Round(time.Millisecond)), names...)
	for _, sl := range chosen {
		pid, err := supervisorPID(s.gw.sandboxDir(sl.id))
		if err != nil {
			s.problem("event #%d: %s: %v", e.n, sl.name, err)
			continue
		}
		w := s.tally.open(evCut, sl.name, time.Now(), e.n)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			s.problem("event #%d: SIGSTOP %s (pid %d): %v", e.n, sl.name, pid, err)
			s.tally.close(w, time.Now())
			continue
		}
		s.mu.Lock()
		sl.busy, sl.frozen = true, pid
		s.mu.Unlock()
		s.later(hold, "SIGCONT "+sl.name, func() bool {
			syscall.Kill(pid, syscall.SIGCONT)
			thawed := time.Now()
			s.tally.close(w, thawed)
			s.mu.Lock()
			sl.busy, sl.frozen = false, 0
			id := sl.id
			s.mu.Unlock()
			s.watch(e, thawed, []string{id})
			return true
		})
	}
}

// stopResume stops a sandbox and starts it again more than a token
// lifetime later.
func (s *soak) stopResume(ctx context.Context) {
	chosen := s.idle(1)
	if len(chosen) == 0 {
		return
	}
	sl := chosen[0]
	after := s.cfg.Lifetime + time.Duration(1000+s.rng.IntN(4000))*time.Millisecond
	e := s.newEvent(evResume, fmt.Sprintf("sandbox stop %s; start again after %s", sl.name, after.Round(time.Millisecond)), sl.name)
	s.mu.Lock()
	sl.busy, sl.running = true, false
	s.mu.Unlock()
	if _, err := s.gw.cli(ctx, "sandbox", "stop", sl.name); err != nil {
		e.problem = err.Error()
		s.problem("event #%d: %v", e.n, err)
	}
	s.later(after, "sandbox start "+sl.name, func() bool {
		if !s.gw.up() {
			return false
		}
		w := s.tally.open(evStart, sl.name, time.Now(), e.n)
		_, err := s.gw.cli(ctx, "sandbox", "start", sl.name)
		started := time.Now()
		s.tally.close(w, started)
		if err != nil {
			s.problem("event #%d: %v", e.n, err)
			return true
		}
		s.mu.Lock()
		sl.busy, sl.running = false, true
		id := sl.id
		s.mu.Unlock()
		s.watch(e, started, []string{id})
		return true
	})
}

// deleteRecreate deletes a sandbox, keeping its last tokens, recreates
// it under the same name, and presents the old tokens to the gateway.
func (s *soak) deleteRecreate(ctx context.Context) {
	chosen := s.idle(1)
	if len(chosen) == 0 {
		return
	}
	sl := chosen[0]
	e := s.newEvent(evDelete, "sandbox delete "+sl.name+"; create it again", sl.name)
	s.mu.Lock()
	sl.busy, sl.running = true, false
	oldID := sl.id
	s.mu.Unlock()
	kept := tokensOf(sl.name, oldID, s.gw.state)
	if _, err := s.gw.cli(ctx, "sandbox", "delete", sl.name); err != nil {
		e.problem = err.Error()
		s.problem("event #%d: %v", e.n, err)
		return
	}
	s.mu.Lock()
	s.deleted = append(s.deleted, kept...)
	sl.id = ""
	s.mu.Unlock()
	if err := s.createAndStart(ctx, sl, e.n); err != nil {
		e.problem = err.Error()
		s.problem("event #%d: recreate: %v", e.n, err)
		return
	}
	s.mu.Lock()
	sl.busy = false
	newID := sl.id
	s.mu.Unlock()
	e.detail += fmt.Sprintf(" (id %.8s… → %.8s…; %d old token(s) kept)", oldID, newID, len(kept))
	s.watch(e, time.Now(), []string{newID})
	for _, d := range kept {
		tries, accepted := presentOnSockets(ctx, d, newID, binaries.Socket(s.gw.state, newID))
		s.mu.Lock()
		s.deletedTries += tries
		s.mu.Unlock()
		s.acceptedDeleted(accepted)
	}
}

func (s *soak) deletedSoFar() []deletedToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deleted)
}

func (s *soak) acceptedDeleted(accepted []string) {
	for _, a := range accepted {
		s.problem("a deleted sandbox's token was accepted: %s", a)
	}
	s.mu.Lock()
	s.deletedAccepted = append(s.deletedAccepted, accepted...)
	s.mu.Unlock()
}

// later schedules an action.
func (s *soak) later(after time.Duration, name string, do func() bool) {
	s.pending = append(s.pending, action{due: time.Now().Add(after), do: do, name: name})
}

// runDue runs the actions whose time has come.
func (s *soak) runDue() {
	now := time.Now()
	keep := s.pending[:0]
	for _, a := range s.pending {
		if now.Before(a.due) || !a.do() {
			keep = append(keep, a)
		}
	}
	s.pending = keep
}

// drainPending runs every pending action now.
func (s *soak) drainPending() {
	for _, a := range s.pending {
		if !a.do() {
			s.problem("pending %s could not run at the end", a.name)
		}
	}
	s.pending = nil
}

// watch measures the recovery after an event: from end, it polls every
// affected sandbox every 50 ms until each holds an accepted token.
func (s *soak) watch(e *event, end time.Time, ids []string) {
	const giveUp = 30 * time.Second
	s.watchers.Go(func() {
		left := slices.Clone(ids)
		var worst time.Duration
		for len(left) > 0 && time.Since(end) < giveUp {
			still := left[:0]
			for _, id := range left {
				if s.check.judge(id).ok {
					worst = max(worst, time.Since(end))
				} else {
					still = append(still, id)
				}
			}
			left = still
			if len(left) > 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		e.affected += len(ids)
		e.recovery = max(e.recovery, worst)
		e.lost = append(e.lost, left...)
	})
}

// finalConvergence waits until every sandbox is connected and holds, and
// has acknowledged, its newest generation.
func (s *soak) finalConvergence(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		all, err := s.gw.list(ctx)
		if err != nil {
			last = err.Error()
		} else {
			last = ""
			for _, sb := range all {
				if !sb.Connected || sb.DeliveredGen != sb.LatestGen || !s.check.judge(sb.ID).ok {
					last = fmt.Sprintf("%s: connected %v, delivered %d of latest %d", sb.Name, sb.Connected, sb.DeliveredGen, sb.LatestGen)
					break
				}
			}
			if last == "" && len(all) == len(s.slots) {
				s.printf("every sandbox connected, holding and acknowledging its newest generation")
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.converged = last
	s.problem("not converged 30 s after the chaos: %s", last)
}

// finalDeletedChecks presents every kept token on the sockets again.
func (s *soak) finalDeletedChecks(ctx context.Context) {
	live := s.counted()
	for i, d := range s.deletedSoFar() {
		var liveID, liveSocket string
		if len(live) > 0 {
			liveID = live[i%len(live)][1]
			liveSocket = binaries.Socket(s.gw.state, liveID)
		}
		tries, accepted := presentOnSockets(ctx, d, liveID, liveSocket)
		s.mu.Lock()
		s.deletedTries += tries
		s.mu.Unlock()
		s.acceptedDeleted(accepted)
	}
}

// teardown deletes every sandbox, stops the gateway, and asks its store
// about every token of every deleted sandbox, these last ones included.
func (s *soak) teardown(ctx context.Context) {
	var final []deletedToken
	for _, c := range s.counted() {
		final = append(final, tokensOf(c[0], c[1], s.gw.state)...)
		if _, err := s.gw.cli(ctx, "sandbox", "delete", c[0]); err != nil {
			s.problem("teardown: %v", err)
		}
	}
	s.mu.Lock()
	for _, sl := range s.slots {
		sl.running, sl.id = false, ""
	}
	s.deleted = append(s.deleted, final...)
	s.mu.Unlock()
	s.gw.stop()
	st, err := s.gw.openStore(ctx)
	if err != nil {
		s.problem("store after the soak: %v", err)
		return
	}
	defer st.Close()
	accepted, err := verdictsInStore(ctx, st, s.deletedSoFar())
	if err != nil {
		s.problem("%v", err)
	}
	s.acceptedDeleted(accepted)
	s.mu.Lock()
	s.deletedTries += len(s.deleted)
	s.mu.Unlock()
}

// cleanup leaves nothing running, whatever happened: thaws frozen
// supervisors, deletes sandboxes through a live gateway, and ends any
// supervisor still running by its pid record's process group.
func (s *soak) cleanup() {
	for _, sl := range s.slots {
		if sl.frozen != 0 {
			syscall.Kill(sl.frozen, syscall.SIGCONT)
		}
	}
	ctx := context.Background()
	if s.gw.up() {
		for _, sl := range s.slots {
			if sl.id != "" {
				s.gw.cli(ctx, "sandbox", "delete", sl.name)
			}
		}
	}
	s.gw.kill()
	entries, _ := os.ReadDir(filepath.Join(s.gw.state, "sandboxes"))
	for _, e := range entries {
		if pid, err := supervisorPID(s.gw.sandboxDir(e.Name())); err == nil {
			if state, _, err := procStat(pid); err == nil && state != "Z" {
				syscall.Kill(-pid, syscall.SIGKILL) // its session's process group
			}
		}
	}
	if s.t.Failed() || os.Getenv("SANDKEY_KEEP_LOGS") != "" {
		keep := filepath.Join(os.TempDir(), "sandkey-soak-gateway.log")
		if data, err := os.ReadFile(s.gw.logPath); err == nil {
			os.WriteFile(keep, data, 0o600)
			s.t.Logf("gateway log kept at %s", keep)
		}
	}
	if err := binaries.UnmountUnder(s.dir); err != nil {
		s.t.Error(err)
	}
	os.RemoveAll(s.dir)
}

// supervisorPID reads the pid of a sandbox's supervisor.
func supervisorPID(sandboxDir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(sandboxDir, "driver", "pid"))
	if err != nil {
		return 0, err
	}
	var rec struct{ PID int }
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 {
		return 0, fmt.Errorf("pid record of %s: %v", sandboxDir, err)
	}
	return rec.PID, nil
}
