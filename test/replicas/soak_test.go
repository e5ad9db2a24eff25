package replicas

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/test/kubeenv"
)

// The replicas soak (`make soak SOAK_MODE=replicas`): the soak of
// test/soak, on three replicas and Kubernetes sandboxes, its chaos
// adding leader kills, replica kills and database restarts. It does not
// run in `make test`.
//
// The sandkey token of a Kubernetes sandbox lives in its supervisor's
// memory only, so the checker judges what the supervisor acknowledged:
// a sandbox holds an accepted token when its acknowledged generation
// (delivered_gen, which only the supervisor's acknowledgement raises) is
// issued, unexpired, and at least the latest generation minus one. A
// recovery is measured until that holds again and a live replica holds
// the session (session_holders).

// Kinds of the replicas soak's chaos events.
const (
	evLeaderKill  = "leader kill"
	evReplicaKill = "replica kill"
	evDBRestart   = "database restart"
	evCut         = "session cut"
	evKeys        = "key rotation"
	evDelete      = "delete and recreate"
)

var soakKinds = []string{evLeaderKill, evReplicaKill, evDBRestart, evCut, evKeys, evDelete}

// soakRecoveryBound is how long after an event ends its recovery window
// lasts: 2 s plus the lease, the re-registration bound of issue 13.
const soakRecoveryBound = 2*time.Second + lease

// The short soak `make test` runs: long enough for a few of every kind
// of event, short enough for CI.
const (
	shortSoakSandboxes = 6
	shortSoakDuration  = 40 * time.Second
)

// soakConfig is one replicas soak's settings, from the environment
// `make soak` sets.
type soakConfig struct {
	sandboxes int
	duration  time.Duration
	seed      uint64
	report    string
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	t.Helper()
	c := soakConfig{sandboxes: 12, duration: 10 * time.Minute, seed: uint64(time.Now().UnixNano()), report: os.Getenv("SANDKEY_SOAK_REPORT")}
	if v := os.Getenv("SANDKEY_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SANDKEY_SOAK_DURATION=%q: want a duration of at least 10s", v)
		}
		c.duration = d
	}
	if v := os.Getenv("SANDKEY_SOAK_SANDBOXES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > 100 {
			t.Fatalf("SANDKEY_SOAK_SANDBOXES=%q: want 2 to 100", v)
		}
		c.sandboxes = n
	}
	if v := os.Getenv("SANDKEY_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SANDKEY_SOAK_SEED=%q: want an unsigned integer", v)
		}
		c.seed = s
	}
	return c
}

// soakEvent is one chaos event as it happened.
type soakEvent struct {
	n        int
	at       time.Duration
	kind     string
	detail   string
	affected int
	recovery time.Duration
	lost     []string
}

// soakWindow is a span in which a sandbox (or, with name "", every one)
// may legitimately not hold an accepted token.
type soakWindow struct {
	name     string
	from, to time.Time // to is zero while the event lasts
}

type replicaSoak struct {
	t     *testing.T
	cfg   soakConfig
	rs    *replicaSet
	rng   *rand.Rand
	begin time.Time

	mu      sync.Mutex
	names   []string
	ids     map[string]string // by name; "" while being recreated
	windows []*soakWindow
	events  []*soakEvent
	// sandbox-seconds sampled, all and outside every window, and how
	// many of each held an accepted token.
	total, totalOK, outside, outsideOK int
	failures                           []string
	deletedTries                       int
	deletedAccepted                    []string
	problems                           []string
	restarts                           []string // the store's consistency after each database restart
	converged                          string   // "" when every sandbox converged after the chaos
	watchers                           sync.WaitGroup
}

func (s *replicaSoak) printf(format string, args ...any) {
	fmt.Printf("soak: [%7.1fs] %s\n", time.Since(s.begin).Seconds(), fmt.Sprintf(format, args...))
}

func (s *replicaSoak) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	s.printf("PROBLEM: %s", p)
	s.mu.Lock()
	s.problems = append(s.problems, p)
	s.mu.Unlock()
}

// TestSoakReplicasNoTokenIsLostUnderChaos is the replicas mode of `make
// soak` when SANDKEY_SOAK_MODE=replicas; otherwise (`make test`) it runs
// a short version: fewer sandboxes, under a minute of the same chaos.
func TestSoakReplicasNoTokenIsLostUnderChaos(t *testing.T) {
	cfg := soakConfigFromEnv(t)
	if os.Getenv("SANDKEY_SOAK_MODE") != "replicas" {
		cfg.sandboxes, cfg.duration, cfg.report = shortSoakSandboxes, shortSoakDuration, ""
	}
	s := &replicaSoak{t: t, cfg: cfg, rs: newReplicaSet(t), rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x5eed)), ids: map[string]string{}}
	s.begin = time.Now()
	s.printf("seed %d (SANDKEY_SOAK_SEED replays it); %d sandboxes on 3 replicas; token lifetime %s; lease %s; %s of chaos",
		cfg.seed, cfg.sandboxes, kubeenv.Lifetime, lease, cfg.duration)
	for i := range cfg.sandboxes {
		name := fmt.Sprintf("sb%03d", i)
		v := s.rs.replicas[i%replicaCount].create(name)
		s.names = append(s.names, name)
		s.ids[name] = v.ID
	}
	s.rs.awaitHeld(s.ids)
	s.printf("%d sandboxes created, every session held", len(s.names))

	ctx, stopChecker := context.WithCancel(context.Background())
	var checkerDone sync.WaitGroup
	checkerDone.Go(func() { s.checkerLoop(ctx) })
	s.chaos()
	s.watchers.Wait()
	stopChecker()
	checkerDone.Wait()
	s.finalConvergence()
	elapsed := time.Since(s.begin)

	checked, doubles, err := s.rs.generationDoubles()
	if err != nil {
		s.problem("%v", err)
	}
	report := s.report(elapsed, checked, doubles)
	fmt.Println(report)
	if cfg.report != "" {
		if err := os.WriteFile(cfg.report, []byte(report), 0o644); err != nil {
			t.Errorf("write %s: %v", cfg.report, err)
		}
	}
	if s.outsideOK != s.outside {
		t.Errorf("credential availability outside recovery windows %d of %d sandbox-seconds; first failures: %v", s.outsideOK, s.outside, s.failures[:min(5, len(s.failures))])
	}
	for _, e := range s.events {
		if e.recovery > soakRecoveryBound {
			t.Errorf("event #%d (%s) took %s to recover, over %s", e.n, e.kind, e.recovery.Round(time.Millisecond), soakRecoveryBound)
		}
		if len(e.lost) > 0 {
			t.Errorf("event #%d (%s): not recovered within 30 s: %v", e.n, e.kind, e.lost)
		}
	}
	for _, d := range doubles {
		t.Error(d)
	}
	for _, a := range s.deletedAccepted {
		t.Errorf("a deleted sandbox's credential was accepted: %s", a)
	}
	for _, p := range s.problems {
		t.Error(p)
	}
}

// verdicts judges every running sandbox from the database at once.
func (s *replicaSoak) verdicts() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rows, err := s.rs.db.QueryContext(ctx, `SELECT s.id, s.latest_gen, s.delivered_gen, COALESCE(g.expires_at, 0)
		FROM sandboxes s LEFT JOIN generations g ON g.sandbox_id = s.id AND g.gen = s.delivered_gen
		WHERE s.state = 'running'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	now := time.Now()
	out := map[string]string{} // id -> "" when it holds an accepted token, else why not
	for rows.Next() {
		var id string
		var latest, delivered, exp int64
		if err := rows.Scan(&id, &latest, &delivered, &exp); err != nil {
			return nil, err
		}
		switch {
		case delivered == 0:
			out[id] = "holds no token"
		case exp == 0:
			out[id] = fmt.Sprintf("holds gen %d, not issued (or pruned)", delivered)
		case !now.Before(time.Unix(0, exp)):
			out[id] = fmt.Sprintf("gen %d expired", delivered)
		case delivered+1 < latest:
			out[id] = fmt.Sprintf("superseded (gen %d, latest %d)", delivered, latest)
		default:
			out[id] = ""
		}
	}
	return out, rows.Err()
}

// recovered says whether sandbox id holds an accepted token and a live
// replica holds its session; with since set, a live replica must also
// have accepted a session of it at or after since (it registered again).
func (s *replicaSoak) recovered(id string, since time.Time) bool {
	v, err := s.verdicts()
	if err != nil || v[id] != "" {
		return false
	}
	h, err := s.rs.holders()
	if err != nil || h[id] == nil || !h[id].alive() {
		return false
	}
	if since.IsZero() {
		return true
	}
	for _, r := range s.rs.live() {
		if _, ok := r.acceptedSince(since)[id]; ok {
			return true
		}
	}
	return false
}

func (s *replicaSoak) checkerLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := time.Now()
		v, err := s.verdicts()
		s.mu.Lock()
		for name, id := range s.ids {
			if id == "" {
				continue
			}
			why := "database unreachable: " + fmt.Sprint(err)
			if err == nil {
				var ok bool
				if why, ok = v[id]; !ok {
					continue // not running
				}
			}
			s.total++
			if why == "" {
				s.totalOK++
			}
			if !s.inWindow(name, at) {
				s.outside++
				if why == "" {
					s.outsideOK++
				} else {
					s.failures = append(s.failures, fmt.Sprintf("%s at +%.1fs: %s", name, at.Sub(s.begin).Seconds(), why))
				}
			}
		}
		s.mu.Unlock()
	}
}

// inWindow: s.mu held.
func (s *replicaSoak) inWindow(name string, at time.Time) bool {
	for _, w := range s.windows {
		if (w.name == "" || w.name == name) && !at.Before(w.from) && (w.to.IsZero() || !at.After(w.to.Add(soakRecoveryBound))) {
			return true
		}
	}
	return false
}

func (s *replicaSoak) open(name string) *soakWindow {
	w := &soakWindow{name: name, from: time.Now()}
	s.mu.Lock()
	s.windows = append(s.windows, w)
	s.mu.Unlock()
	return w
}

func (s *replicaSoak) close(w *soakWindow) {
	s.mu.Lock()
	w.to = time.Now()
	s.mu.Unlock()
}

func (s *replicaSoak) newEvent(kind, detail string) *soakEvent {
	s.mu.Lock()
	e := &soakEvent{n: len(s.events) + 1, at: time.Since(s.begin), kind: kind, detail: detail}
	s.events = append(s.events, e)
	s.mu.Unlock()
	s.printf("#%d %s: %s", e.n, kind, detail)
	return e
}

// watch measures the recovery of ids after an event ended at end: until
// each holds an accepted token, held by a live replica. Those of
// reconnect must also have registered again since end.
func (s *replicaSoak) watch(e *soakEvent, end time.Time, ids []string, reconnect map[string]bool) {
	s.watchers.Go(func() {
		left := append([]string(nil), ids...)
		var worst time.Duration
		for len(left) > 0 && time.Since(end) < 30*time.Second {
			still := left[:0]
			for _, id := range left {
				var since time.Time
				if reconnect[id] {
					since = end
				}
				if s.recovered(id, since) {
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
		e.affected += len(ids)
		e.recovery = max(e.recovery, worst)
		e.lost = append(e.lost, left...)
		s.mu.Unlock()
	})
}

// heldBy returns the running sandboxes whose session r holds now.
func (s *replicaSoak) heldBy(r *replica) map[string]bool {
	out := map[string]bool{}
	h, err := s.rs.holders()
	if err != nil {
		s.problem("%v", err)
		return out
	}
	for _, id := range s.runningIDs() {
		if h[id] == r {
			out[id] = true
		}
	}
	return out
}

func (s *replicaSoak) runningIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range s.ids {
		if id != "" {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// chaos runs every kind of event once, in a seeded order, then draws
// them at random, seeded gaps until the duration ends.
func (s *replicaSoak) chaos() {
	end := time.Now().Add(s.cfg.duration)
	queue := append([]string(nil), soakKinds...)
	s.rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
	for time.Now().Before(end) {
		time.Sleep(time.Duration(2000+s.rng.IntN(6000)) * time.Millisecond)
		kind := soakKinds[s.rng.IntN(len(soakKinds))]
		if len(queue) > 0 {
			kind, queue = queue[0], queue[1:]
		}
		s.event(kind)
	}
}

func (s *replicaSoak) event(kind string) {
	rs := s.rs
	switch kind {
	case evLeaderKill, evReplicaKill:
		leaders := rs.leaders()
		if len(leaders) != 1 {
			s.problem("%s: %d replicas say they lead", kind, len(leaders))
			return
		}
		victim := leaders[0]
		if kind == evReplicaKill {
			victim = rs.replicas[(leaders[0].n+1+s.rng.IntN(replicaCount-1))%replicaCount]
		}
		down := time.Duration(500+s.rng.IntN(2500)) * time.Millisecond
		e := s.newEvent(kind, fmt.Sprintf("SIGKILL replica %d, down %s at least", victim.n, down))
		w := s.open("")
		orphans := s.heldBy(victim)
		victim.kill()
		killed := time.Now()
		// Its supervisors register again through the Service while it
		// is down: the recovery runs from the kill.
		s.watch(e, killed, s.runningIDs(), orphans)
		// A leader again (another one, when the leader was killed)
		// before it comes back.
		e.detail += fmt.Sprintf(" (%d session(s)); a leader after %s", len(orphans), s.leaderAgain(killed))
		time.Sleep(time.Until(killed.Add(down)))
		victim.start()
		s.close(w)
	case evDBRestart:
		down := time.Duration(1000+s.rng.IntN(3000)) * time.Millisecond
		e := s.newEvent(kind, fmt.Sprintf("Postgres stopped for %s", down))
		w := s.open("")
		if err := rs.pg.StopServer(); err != nil {
			s.problem("event #%d: %v", e.n, err)
		}
		time.Sleep(down)
		if err := rs.pg.StartServer(); err != nil {
			s.problem("event #%d: Postgres does not start again: %v", e.n, err)
			s.close(w)
			return
		}
		up := time.Now()
		for _, r := range rs.live() {
			for deadline := time.Now().Add(30 * time.Second); ; {
				if ok, _ := r.ready(); ok {
					break
				}
				if time.Now().After(deadline) {
					s.problem("event #%d: replica %d not ready 30 s after Postgres came back", e.n, r.n)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		s.close(w)
		e.detail += fmt.Sprintf("; every replica ready %s after", time.Since(up).Round(time.Millisecond))
		result := "ok"
		if err := s.storeConsistent(); err != nil {
			result = err.Error()
			s.problem("store after database restart #%d: %v", e.n, err)
		}
		s.mu.Lock()
		s.restarts = append(s.restarts, fmt.Sprintf("restart #%d: %s", e.n, result))
		s.mu.Unlock()
		s.watch(e, time.Now(), s.runningIDs(), nil)
	case evCut:
		r := rs.replicas[s.rng.IntN(replicaCount)]
		e := s.newEvent(kind, fmt.Sprintf("the Service drops every connection to replica %d", r.n))
		w := s.open("")
		cut := s.heldBy(r)
		rs.service.cut(r.n)
		s.close(w)
		e.detail += fmt.Sprintf(" (%d session(s))", len(cut))
		s.watch(e, w.to, s.runningIDs(), cut)
	case evKeys:
		r := rs.replicas[s.rng.IntN(replicaCount)]
		e := s.newEvent(kind, fmt.Sprintf("keys rotate --now through replica %d", r.n))
		if _, err := r.cli("keys", "rotate", "--now"); err != nil {
			s.problem("event #%d: %v", e.n, err)
		}
	case evDelete:
		s.deleteRecreate()
	}
}

// leaderAgain waits until exactly one replica leads and returns how long
// after since that was.
func (s *replicaSoak) leaderAgain(since time.Time) time.Duration {
	deadline := time.Now().Add(30 * time.Second)
	for len(s.rs.leaders()) != 1 {
		if time.Now().After(deadline) {
			s.problem("no single leader 30 s after a kill")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(since).Round(time.Millisecond)
}

// deleteRecreate deletes a sandbox, keeping its credentials (the pod's
// projected token and a sandkey token from the exchange), recreates it
// under the same name, and presents the old credentials to every replica.
func (s *replicaSoak) deleteRecreate() {
	rs := s.rs
	name := s.names[s.rng.IntN(len(s.names))]
	r := rs.replicas[s.rng.IntN(replicaCount)]
	e := s.newEvent(evDelete, fmt.Sprintf("sandbox delete %s through replica %d; create it again", name, r.n))
	s.mu.Lock()
	oldID := s.ids[name]
	s.mu.Unlock()
	projected, err := r.cli("sandbox", "exec", name, "--", "/busybox", "cat", "/run/sandkey/k8s-sa/token")
	if err != nil {
		s.problem("event #%d: %v", e.n, err)
		return
	}
	projected = strings.TrimSpace(projected)
	sandkeyToken, err := rs.exchange(rs.service.Addr(), oldID, projected)
	if err != nil {
		s.problem("event #%d: exchange before the delete: %v", e.n, err)
		return
	}
	w := s.open(name)
	s.mu.Lock()
	s.ids[name] = ""
	s.mu.Unlock()
	if _, err := r.cli("sandbox", "delete", name); err != nil {
		s.problem("event #%d: %v", e.n, err)
		s.close(w)
		return
	}
	v := r.create(name)
	s.mu.Lock()
	s.ids[name] = v.ID
	s.mu.Unlock()
	s.close(w)
	s.watch(e, time.Now(), []string{v.ID}, nil)
	for _, other := range rs.live() {
		s.mu.Lock()
		s.deletedTries += 3
		s.mu.Unlock()
		if _, err := rs.exchange(other.sessionAddr, oldID, projected); err == nil {
			s.acceptedDeleted(fmt.Sprintf("replica %d exchanged the projected token of deleted %s", other.n, name))
		}
		for _, helloFor := range []string{oldID, v.ID} {
			if err := rs.hello(other.sessionAddr, sandkeyToken, helloFor); err == nil {
				s.acceptedDeleted(fmt.Sprintf("replica %d accepted a session with deleted %s's token (Hello for %s)", other.n, name, helloFor))
			}
		}
	}
}

func (s *replicaSoak) acceptedDeleted(what string) {
	s.printf("PROBLEM: %s", what)
	s.mu.Lock()
	s.deletedAccepted = append(s.deletedAccepted, what)
	s.mu.Unlock()
}

// finalConvergence waits until every sandbox's session is held by a live
// replica and its supervisor acknowledged its newest generation.
func (s *replicaSoak) finalConvergence() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, id := range s.runningIDs() {
			var latest, delivered int64
			if err := s.rs.db.QueryRow(`SELECT latest_gen, delivered_gen FROM sandboxes WHERE id = $1`, id).Scan(&latest, &delivered); err != nil ||
				latest != delivered || !s.recovered(id, time.Time{}) {
				all = false
				break
			}
		}
		if all {
			s.printf("every sandbox held by a live replica, acknowledging its newest generation")
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.mu.Lock()
	s.converged = "not within 30 s"
	s.mu.Unlock()
	s.problem("not converged 30 s after the chaos")
}

// storeConsistent checks what a database restart must not break: every
// sandbox's latest_gen covers its newest generation row (nothing is
// minted twice from a stale counter), and no acknowledged generation is
// beyond the latest.
func (s *replicaSoak) storeConsistent() error {
	var behind, ahead int
	err := s.rs.db.QueryRow(`SELECT
		(SELECT count(*) FROM sandboxes x WHERE x.latest_gen < (SELECT COALESCE(max(g.gen), 0) FROM generations g WHERE g.sandbox_id = x.id)),
		(SELECT count(*) FROM sandboxes WHERE delivered_gen > latest_gen)`).Scan(&behind, &ahead)
	if err != nil {
		return fmt.Errorf("check the store: %w", err)
	}
	if behind+ahead > 0 {
		return fmt.Errorf("%d sandbox(es) whose latest_gen is below a stored generation, %d acknowledging beyond it", behind, ahead)
	}
	return nil
}

// report is the Markdown report, with the figures of test/soak's.
func (s *replicaSoak) report(elapsed time.Duration, generations int, doubles []string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	pct := func(n, of int) string {
		if of == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.3f%%", 100*float64(n)/float64(of))
	}
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	var longest *soakEvent
	lost, ok := 0, 0
	for _, e := range s.events {
		if e.affected > 0 && (longest == nil || e.recovery > longest.recovery) {
			longest = e
		}
		lost += len(e.lost)
	}
	for _, r := range s.restarts {
		if strings.HasSuffix(r, ": ok") {
			ok++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sandkey replicas soak report\n\n")
	fmt.Fprintf(&b, "Written by `make soak SOAK_MODE=replicas` (test/replicas) on %s, at commit `%s`. Replay the same chaos with `SANDKEY_SOAK_SEED=%d make soak SOAK_MODE=replicas`.\n\n",
		s.begin.UTC().Format("2006-01-02 15:04 MST"), commit, s.cfg.seed)
	fmt.Fprintf(&b, "%d sandboxes on the Kubernetes driver (real pods on a one-node cluster, the real supervisor), served by %d gateway replicas (the real binary) sharing one Postgres, behind a TCP stand-in for the Service; token lifetime %s, leader lease %s; %s of chaos, %d events; every sandbox checked every second from the database (its acknowledged generation: issued, unexpired, at most one behind the latest).\n\n",
		s.cfg.sandboxes, replicaCount, kubeenv.Lifetime, lease, s.cfg.duration, len(s.events))
	fmt.Fprintf(&b, "## Figures\n\n| Figure | Result | Target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| Credential availability outside recovery windows | %s (%d of %d sandbox-seconds) | 100%% |\n", pct(s.outsideOK, s.outside), s.outsideOK, s.outside)
	fmt.Fprintf(&b, "| Credential availability over all sandbox-seconds | %s (%d of %d; %d inside windows) | — |\n", pct(s.totalOK, s.total), s.totalOK, s.total, s.total-s.outside)
	if longest != nil {
		fmt.Fprintf(&b, "| Longest recovery (event to an accepted token, held by a live replica; orphaned sessions registered again) | %s (#%d %s: %s) | ≤ %s |\n",
			longest.recovery.Round(time.Millisecond), longest.n, longest.kind, longest.detail, soakRecoveryBound)
	}
	fmt.Fprintf(&b, "| Sandboxes not recovered within 30 s | %d | 0 |\n", lost)
	fmt.Fprintf(&b, "| Generations issued twice | %d (of %d generations seen in the replicas' logs) | 0 |\n", len(doubles), generations)
	fmt.Fprintf(&b, "| Store consistent after each database restart | %d of %d restarts ok | all |\n", ok, len(s.restarts))
	fmt.Fprintf(&b, "| Credentials of deleted sandboxes accepted | %d of %d presentations | 0 |\n", len(s.deletedAccepted), s.deletedTries)
	conv := "yes"
	if s.converged != "" {
		conv = "no: " + s.converged
	}
	fmt.Fprintf(&b, "| Every sandbox converged after the chaos | %s | yes |\n", conv)
	fmt.Fprintf(&b, "\n## Events by kind\n\n| Kind | Count | Median recovery | Longest recovery |\n|---|---|---|---|\n")
	for _, k := range soakKinds {
		var recs []time.Duration
		n := 0
		for _, e := range s.events {
			if e.kind == k {
				n++
				if e.affected > 0 {
					recs = append(recs, e.recovery)
				}
			}
		}
		med, worst := "—", "—"
		if len(recs) > 0 {
			med, worst = percentile(recs, 50).Round(time.Millisecond).String(), percentile(recs, 100).Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", k, n, med, worst)
	}
	fmt.Fprintf(&b, "\n## Events\n\n")
	for _, e := range s.events {
		fmt.Fprintf(&b, "- #%d at %.1fs, %s: %s; recovery %s over %d sandbox(es)\n", e.n, e.at.Seconds(), e.kind, e.detail, e.recovery.Round(time.Millisecond), e.affected)
	}
	if len(s.problems)+len(doubles)+len(s.failures) > 0 {
		fmt.Fprintf(&b, "\n## Problems\n\n")
		for _, p := range append(append(append([]string(nil), s.problems...), doubles...), s.failures[:min(20, len(s.failures))]...) {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	return b.String()
}
