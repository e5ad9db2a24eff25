package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/supervisor"
	"github.com/sandkey/sandkey/test/binaries"
)

// issued is one generation of a sandbox as the checker saw it issued.
type issued struct {
	jti   string
	raw   string // "" when seen only in a status file
	where string // where it was first seen
}

// ledger records every (sandbox, gen) the checker saw with its jti: from
// the token directories (current and previous generation) and from the
// supervisors' status files. A second jti for one generation is a
// generation issued twice.
type ledger struct {
	mu      sync.Mutex
	gens    map[string]map[uint64]issued
	newest  map[string]uint64
	doubles []string
}

func newLedger() *ledger {
	return &ledger{gens: map[string]map[uint64]issued{}, newest: map[string]uint64{}}
}

func (l *ledger) record(id string, gen uint64, jti, raw, where string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gens[id] == nil {
		l.gens[id] = map[uint64]issued{}
	}
	prev, ok := l.gens[id][gen]
	switch {
	case !ok:
		l.gens[id][gen] = issued{jti: jti, raw: raw, where: where}
	case prev.jti != jti:
		l.doubles = append(l.doubles, fmt.Sprintf("sandbox %s: generation %d issued twice: jti %s (%s) and %s (%s)",
			id, gen, prev.jti, prev.where, jti, where))
	case prev.raw == "" && raw != "":
		prev.raw = raw
		l.gens[id][gen] = prev
	}
	if gen > l.newest[id] {
		l.newest[id] = gen
	}
}

func (l *ledger) lookup(id string, gen uint64) (issued, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	is, ok := l.gens[id][gen]
	return is, ok
}

func (l *ledger) newestGen(id string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.newest[id]
}

// stats returns how many generations were seen and the doubles.
func (l *ledger) stats() (generations int, doubles []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, gens := range l.gens {
		generations += len(gens)
	}
	return generations, append([]string(nil), l.doubles...)
}

// observeDir records the current and previous generations of a sandbox's
// token directory. A directory being replaced or removed is skipped: the
// next look sees it.
func (l *ledger) observeDir(id, dir string) {
	if raw, err := tokendir.ReadToken(dir); err == nil {
		l.recordRaw(id, string(raw), "directory")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		// The timestamped generations ("..2026_..."), not ..data.
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "..") || strings.HasPrefix(e.Name(), "..data") {
			continue
		}
		if raw, err := os.ReadFile(filepath.Join(dir, e.Name(), tokendir.TokenFile)); err == nil {
			l.recordRaw(id, string(raw), "directory")
		}
	}
}

func (l *ledger) recordRaw(id, raw, where string) {
	tok, err := auth.ParseUnverified(strings.TrimSpace(raw))
	if err != nil || tok.SandboxID() != id {
		return // the verdict on the held token says what is wrong
	}
	l.record(id, tok.Gen(), tok.JTI(), tok.Raw(), where)
}

// verdict is whether one sandbox's supervisor held an accepted token.
type verdict struct {
	ok  bool
	why string // why not
	gen uint64 // the generation held
}

// checker judges sandboxes' tokens as the gateway would.
type checker struct {
	gw     *gatewayProc
	ledger *ledger

	mu     sync.Mutex
	keys   *auth.JWKS        // the JWKS served on /jwks.json, last fetched
	latest map[string]uint64 // latest_gen of `sandbox list`, last fetched
}

func newChecker(gw *gatewayProc, l *ledger) *checker {
	return &checker{gw: gw, ledger: l, latest: map[string]uint64{}}
}

// refresh fetches the gateway's JWKS and latest generations while it is
// up; while it is down, the last ones stand (nobody mints then).
func (c *checker) refresh(ctx context.Context) {
	if !c.gw.up() {
		return
	}
	keys, kerr := c.gw.jwks(ctx)
	all, lerr := c.gw.list(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if kerr == nil {
		c.keys = keys
	}
	if lerr == nil {
		for _, sb := range all {
			c.latest[sb.ID] = max(c.latest[sb.ID], sb.LatestGen)
		}
	}
}

// judge says whether sandbox id's supervisor holds, at this moment, a
// token the gateway accepts. It reads the status file first and the
// directory second, so a generation the supervisor holds was written
// before the directory is looked at.
func (c *checker) judge(id string) verdict {
	dir := c.gw.sandboxDir(id)
	if why := supervisorAlive(filepath.Join(dir, "driver", "pid")); why != "" {
		return verdict{why: why}
	}
	st, err := supervisor.ReadStatus(filepath.Join(dir, "driver", "status.json"))
	if err != nil {
		return verdict{why: "no status file"}
	}
	at := time.Now()
	c.ledger.observeDir(id, binaries.TokenDir(c.gw.state, id))
	if st.Gen == 0 {
		return verdict{why: "holds no token"}
	}
	c.ledger.record(id, st.Gen, st.JTI, "", "status file")
	v := verdict{gen: st.Gen}
	is, ok := c.ledger.lookup(id, st.Gen)
	switch {
	case !ok || is.raw == "":
		v.why = fmt.Sprintf("holds gen %d, never seen in its directory", st.Gen)
		return v
	case is.jti != st.JTI:
		v.why = fmt.Sprintf("holds gen %d jti %s, issued as jti %s", st.Gen, st.JTI, is.jti)
		return v
	}
	c.mu.Lock()
	keys, latest := c.keys, max(c.latest[id], c.ledger.newestGen(id))
	c.mu.Unlock()
	if keys == nil {
		v.why = "no JWKS from the gateway yet"
		return v
	}
	verifier := &auth.Verifier{Keys: keys, Issuer: gateway.DefaultIssuer, Audience: gateway.DefaultAudience,
		TrustDomain: gateway.DefaultTrustDomain, Now: func() time.Time { return at }}
	tok, err := verifier.Verify(is.raw, id)
	switch {
	case err != nil:
		v.why = "refused: " + auth.ReasonOf(err)
	case !at.Before(tok.ExpiresAt()):
		v.why = "expired"
	case st.Gen+1 < latest:
		v.why = fmt.Sprintf("superseded (gen %d, latest %d)", st.Gen, latest)
	default:
		v.ok = true
	}
	return v
}

// supervisorAlive reads a process sandbox's pid record and says why its
// supervisor is not running, or "".
func supervisorAlive(pidFile string) string {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return "no pid record"
	}
	var rec struct {
		PID        int    `json:"pid"`
		StartTicks uint64 `json:"start_ticks"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 {
		return "unreadable pid record"
	}
	state, ticks, err := procStat(rec.PID)
	switch {
	case err != nil:
		return "supervisor not running"
	case state == "Z" || state == "X":
		return "supervisor exited"
	case rec.StartTicks != 0 && ticks != rec.StartTicks:
		return "supervisor not running (pid reused)"
	}
	return ""
}

// procStat returns a process's state letter and start time in ticks.
func procStat(pid int) (state string, startTicks uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	startTicks, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], startTicks, err
}
