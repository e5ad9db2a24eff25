package soak

import (
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"
)

// results is what a soak measured.
type results struct {
	cfg              config
	at               time.Time
	commit           string
	elapsed          time.Duration
	counts           counts
	events           []*event
	generations      int
	doubles          []string
	crashes          []string
	deletedTokens    int
	deletedSandboxes int // during the chaos, and every one at teardown
	deletedTries     int
	deletedAccepted  []string
	problems         []string
	converged        string
}

func (s *soak) results(elapsed time.Duration) *results {
	s.mu.Lock()
	defer s.mu.Unlock()
	gens, doubles := s.ledger.stats()
	sandboxes := map[string]bool{}
	for _, d := range s.deleted {
		sandboxes[d.id] = true
	}
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	return &results{cfg: s.cfg, at: s.begin, commit: commit, elapsed: elapsed, counts: s.tally.counts(),
		events: slices.Clone(s.events), generations: gens, doubles: doubles, crashes: slices.Clone(s.crashes),
		deletedTokens: len(s.deleted), deletedSandboxes: len(sandboxes), deletedTries: s.deletedTries, deletedAccepted: slices.Clone(s.deletedAccepted),
		problems: slices.Clone(s.problems), converged: s.converged}
}

func pct(n, of int) string {
	if of == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f%%", 100*float64(n)/float64(of))
}

// longest returns the event with the longest measured recovery.
func (r *results) longest() *event {
	var worst *event
	for _, e := range r.events {
		if e.affected > 0 && (worst == nil || e.recovery > worst.recovery) {
			worst = e
		}
	}
	return worst
}

func (r *results) lost() []string {
	var out []string
	for _, e := range r.events {
		for _, id := range e.lost {
			out = append(out, fmt.Sprintf("sandbox %.8s… after #%d %s", id, e.n, e.kind))
		}
	}
	return out
}

func (r *results) crashesOK() int {
	n := 0
	for _, c := range r.crashes {
		if strings.HasSuffix(c, ": ok") {
			n++
		}
	}
	return n
}

// problems lists every way the soak missed a target.
func (r *results) failures() []string {
	var out []string
	c := r.counts
	if c.outsideOK != c.outside {
		out = append(out, fmt.Sprintf("credential availability outside recovery windows is %s (%d of %d sandbox-seconds), want 100%%; first: %s",
			pct(c.outsideOK, c.outside), c.outsideOK, c.outside, describeSample(c.failures[0], r.at)))
	}
	if c.outside == 0 {
		out = append(out, "no sample fell outside the recovery windows: the checker measured nothing")
	}
	for _, e := range r.events {
		if e.affected > 0 && e.recovery > RecoveryBound {
			out = append(out, fmt.Sprintf("event #%d (%s) took %s to recover, over the %s bound", e.n, e.kind, e.recovery.Round(time.Millisecond), RecoveryBound))
		}
	}
	for _, l := range r.lost() {
		out = append(out, "not recovered within 30 s: "+l)
	}
	out = append(out, r.doubles...)
	out = append(out, r.problems...)
	return out
}

func describeSample(s sample, begin time.Time) string {
	return fmt.Sprintf("%s at +%.1fs: %s", s.slot, s.at.Sub(begin).Seconds(), s.why)
}

// byKind summarises the events of each kind: count and recoveries.
func (r *results) byKind() [][4]string {
	var rows [][4]string
	for _, k := range eventKinds {
		var recs []time.Duration
		n := 0
		for _, e := range r.events {
			if e.kind != k {
				continue
			}
			n++
			if e.affected > 0 {
				recs = append(recs, e.recovery)
			}
		}
		longest, median := "—", "—"
		if len(recs) > 0 {
			sort.Slice(recs, func(i, j int) bool { return recs[i] < recs[j] })
			longest, median = fmtDur(recs[len(recs)-1]), fmtDur(recs[len(recs)/2])
		}
		rows = append(rows, [4]string{k, fmt.Sprint(n), median, longest})
	}
	return rows
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0 (held throughout)"
	}
	return d.Round(time.Millisecond).String()
}

// figures are the headline rows: figure, result, target.
func (r *results) figures() [][3]string {
	c := r.counts
	longest := "no event measured"
	if e := r.longest(); e != nil {
		longest = fmt.Sprintf("%s (#%d %s: %s)", fmtDur(e.recovery), e.n, e.kind, e.detail)
	}
	deleted := fmt.Sprintf("%d of %d presentations (%d tokens of %d deleted sandboxes)",
		len(r.deletedAccepted), r.deletedTries, r.deletedTokens, r.deletedSandboxes)
	converged := "yes"
	if r.converged != "" {
		converged = "no: " + r.converged
	}
	return [][3]string{
		{"Credential availability outside recovery windows", fmt.Sprintf("%s (%s of %s sandbox-seconds)", pct(c.outsideOK, c.outside), thousands(c.outsideOK), thousands(c.outside)), "100%"},
		{"Credential availability over all sandbox-seconds", fmt.Sprintf("%s (%s of %s; %s inside windows)", pct(c.totalOK, c.total), thousands(c.totalOK), thousands(c.total), thousands(c.total-c.outside)), "—"},
		{"Longest recovery window (event's end to an accepted token)", longest, "≤ " + RecoveryBound.String()},
		{"Sandboxes not recovered within 30 s", fmt.Sprint(len(r.lost())), "0"},
		{"Generations issued twice", fmt.Sprintf("%d (of %s generations seen)", len(r.doubles), thousands(r.generations)), "0"},
		{"Store integrity after each crash", fmt.Sprintf("%d of %d crashes ok", r.crashesOK(), len(r.crashes)), "all"},
		{"Tokens of deleted sandboxes accepted", deleted, "0"},
		{"Every sandbox converged after the chaos", converged, "yes"},
	}
}

// text is the summary printed on stdout.
func (r *results) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary: seed %d, %d sandboxes, token lifetime %s, %s of chaos, %d events\n",
		r.cfg.Seed, r.cfg.Sandboxes, r.cfg.Lifetime, r.cfg.Duration, len(r.events))
	for _, f := range r.figures() {
		fmt.Fprintf(&b, "  %-60s %s (target %s)\n", f[0]+":", f[1], f[2])
	}
	for _, k := range r.byKind() {
		fmt.Fprintf(&b, "  %-24s %3s events, median recovery %s, longest %s\n", k[0]+":", k[1], k[2], k[3])
	}
	if f := r.failures(); len(f) > 0 {
		fmt.Fprintf(&b, "  TARGETS MISSED:\n")
		for _, p := range f {
			fmt.Fprintf(&b, "    - %s\n", p)
		}
	}
	return b.String()
}

// markdown is bench/SOAK.md.
func (r *results) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# sandkey soak report\n\n")
	p("Written by `make soak` (test/soak) on %s, at commit `%s`. Replay the same chaos with `SANDKEY_SOAK_SEED=%d make soak`.\n\n",
		r.at.UTC().Format("2006-01-02 15:04 MST"), r.commit, r.cfg.Seed)
	p("%d sandboxes on the process driver, each running its supervisor (the real binary) under the real gateway binary; "+
		"token lifetime %s (rotation at half of it plus up to 10%%); %s of chaos, %d events; every sandbox checked every second.\n\n",
		r.cfg.Sandboxes, r.cfg.Lifetime, r.cfg.Duration, len(r.events))
	p("## Figures\n\n| Figure | Result | Target |\n|---|---|---|\n")
	for _, f := range r.figures() {
		p("| %s | %s | %s |\n", f[0], cell(f[1]), f[2])
	}
	if f := r.failures(); len(f) > 0 {
		p("\n**Targets missed:**\n\n")
		for _, x := range f {
			p("- %s\n", x)
		}
	}
	p("\n## Events by kind\n\n| Event | Count | Median recovery | Longest recovery |\n|---|---|---|---|\n")
	for _, k := range r.byKind() {
		p("| %s | %s | %s | %s |\n", k[0], k[1], k[2], k[3])
	}
	p("\n## Definitions\n\n")
	p("- **Accepted token.** At a sample, a sandbox's supervisor holds an accepted token when its process is alive; " +
		"its status file names a generation and jti that the gateway wrote into the sandbox's token directory; that token's " +
		"signature verifies against the JWKS the gateway serves on `/jwks.json` (the last one fetched while it is down); " +
		"it has not expired (exp strictly after the sample, no leeway); and its generation is at least the newest one minus one " +
		"(`sandbox list -o json`, or the newest in the directory): the gateway accepts only the two newest.\n")
	p("- **Sandbox-second.** One sample of one sandbox that must hold a token (started, not stopped or deleted), taken every second.\n")
	p("- **Recovery windows.** Events after which a token may legitimately be unacceptable. Each lasts from the event's start until "+
		"%s after its end: a *gateway crash* from the SIGKILL until %s after the restarted gateway answers its operator API, for every "+
		"sandbox (nobody can mint while it is down); a *session cut* from the SIGSTOP of a supervisor until %s after its SIGCONT, for "+
		"that sandbox (a stopped process takes no token); a *start* (first start, resume, recreate) from the command until %s after "+
		"it returned, for that sandbox (its supervisor is booting). Key rotations and deletions of other sandboxes get no window. "+
		"Availability outside the windows must be 100%%.\n", RecoveryBound, RecoveryBound, RecoveryBound, RecoveryBound)
	p("- **Recovery.** From an event's end, every affected sandbox is polled every 50 ms until it holds an accepted token; an " +
		"event's recovery is the slowest of them, 0 when every one held an accepted token throughout.\n")
	p("- **Generations issued twice.** Every (sandbox, generation) seen in a token directory (current and previous) or a status " +
		"file is recorded with its jti; a second jti for the same generation counts.\n")
	p("- **Store integrity.** After every SIGKILL, before the restart, the store is opened with the thorough integrity check " +
		"and its `Check` is run.\n")
	p("- **Tokens of deleted sandboxes.** Before a delete, the current and previous tokens in its directory are kept. The gateway " +
		"binary serves sessions only on per-sandbox sockets, so each kept token is presented every way the binaries allow: on the " +
		"deleted sandbox's socket (it must be gone), and as bearer on the socket of the sandbox recreated under its name, with a Hello " +
		"for the deleted sandbox and one for the new one (right after the delete, and again at the end); and the store's own " +
		"verdict (`IsAcceptable`, which decides a bearer on a shared listener) is asked while the gateway is down after every crash, " +
		"and after the soak for every token of every sandbox, all deleted then.\n")
	p("\n## Chaos log\n\n| # | At | Event | Detail | Sandboxes measured | Recovery |\n|---|---|---|---|---|---|\n")
	for _, e := range r.events {
		rec := "—"
		if e.affected > 0 {
			rec = fmtDur(e.recovery)
		}
		if len(e.lost) > 0 {
			rec += fmt.Sprintf(" (%d not recovered)", len(e.lost))
		}
		detail := e.detail
		if e.problem != "" {
			detail += " — PROBLEM: " + e.problem
		}
		p("| %d | +%.1fs | %s | %s | %d | %s |\n", e.n, e.at.Seconds(), e.kind, cell(detail), e.affected, rec)
	}
	if len(r.crashes) > 0 {
		p("\n## Store after each crash\n\n")
		for _, c := range r.crashes {
			p("- %s\n", c)
		}
	}
	if f := r.counts.failures; len(f) > 0 {
		p("\n## Unavailable outside recovery windows\n\n")
		for i, s := range f {
			if i == 50 {
				p("- … and %d more\n", len(f)-50)
				break
			}
			p("- %s\n", describeSample(s, r.at))
		}
	}
	return b.String()
}

// thousands writes n with thousands separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
