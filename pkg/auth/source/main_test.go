package source

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	sandboxID   = "sb-1"
	issuerName  = "sandkey-gateway"
	audience    = "sandkey"
	trustDomain = "sandkey.test"
)

// fixture is a gateway in miniature: a key set, an issuer, and the
// sandbox's token directory, written by the real atomic writer.
type fixture struct {
	t      testing.TB
	dir    string
	keys   *auth.KeySet
	issuer *auth.Issuer
	writer *tokendir.Writer
	reg    *prometheus.Registry
	logs   *observer.ObservedLogs
	minted []string // every raw token minted, to check none is logged
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	key, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, keys: auth.NewKeySet(key), reg: prometheus.NewRegistry()}
	f.issuer = f.newIssuer(f.keys, time.Now)
	f.dir = t.TempDir() + "/auth"
	if f.writer, err = tokendir.NewWriter(f.dir); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) newIssuer(keys *auth.KeySet, now func() time.Time) *auth.Issuer {
	f.t.Helper()
	iss, err := auth.NewIssuer(auth.IssuerConfig{Keys: keys, Issuer: issuerName, Audience: audience,
		TrustDomain: trustDomain, Lifetime: time.Hour, Now: now})
	if err != nil {
		f.t.Fatal(err)
	}
	return iss
}

// mint mints a token of gen for the fixture's sandbox.
func (f *fixture) mint(gen uint64) *auth.Token {
	return f.mintWith(f.issuer, sandboxID, gen)
}

func (f *fixture) mintWith(iss *auth.Issuer, sandbox string, gen uint64) *auth.Token {
	f.t.Helper()
	tok, err := iss.Mint(sandbox, gen)
	if err != nil {
		f.t.Fatal(err)
	}
	f.minted = append(f.minted, tok.Raw())
	return tok
}

func (f *fixture) jwks() []byte {
	f.t.Helper()
	data, err := f.keys.JWKS().Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

// write publishes raw and the fixture's JWKS in the directory.
func (f *fixture) write(raw string) {
	f.t.Helper()
	if err := f.writer.Write(map[string][]byte{tokendir.TokenFile: []byte(raw), tokendir.JWKSFile: f.jwks()}); err != nil {
		f.t.Fatal(err)
	}
}

// source starts a Source on the fixture's directory; mods adjust its Config.
func (f *fixture) source(mods ...func(*Config)) *Source {
	f.t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	cfg := Config{SandboxID: sandboxID, Dir: f.dir, Issuer: issuerName, Audience: audience,
		TrustDomain: trustDomain, Logger: zap.New(core), Registerer: f.reg}
	for _, mod := range mods {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		s.Close()
		f.checkNoTokenLogged(logs)
	})
	return s
}

// pollOnly turns fsnotify off and polls every interval.
func pollOnly(interval time.Duration) func(*Config) {
	return func(c *Config) { c.noWatch, c.PollInterval = true, interval }
}

// watchOnly leaves fsnotify as the only channel that can act within a test.
func watchOnly(c *Config) { c.PollInterval = time.Hour }

// checkNoTokenLogged fails the test if any log entry holds a minted token
// or its signature.
func (f *fixture) checkNoTokenLogged(logs *observer.ObservedLogs) {
	f.t.Helper()
	for _, e := range logs.All() {
		text := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, raw := range f.minted {
			sig := raw[strings.LastIndexByte(raw, '.')+1:]
			if strings.Contains(text, raw) || strings.Contains(text, sig) {
				f.t.Errorf("a log entry holds a raw token: %q", e.Message)
			}
		}
	}
}

func (f *fixture) rejected(reason, origin string) float64 {
	return counter(f.t, f.reg, "sandkey_supervisor_token_rejected_total", map[string]string{"reason": reason, "origin": origin})
}

func (f *fixture) accepted(origin string) float64 {
	return counter(f.t, f.reg, "sandkey_supervisor_token_accepted_total", map[string]string{"origin": origin})
}

// counter reads a counter by name and labels from reg; 0 when it was never
// incremented.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	metric:
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != labels[lp.GetName()] {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// waitFor polls cond until it holds or ten seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func genOf(t *auth.Token) uint64 {
	if t == nil {
		return 0
	}
	return t.Gen()
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// counterSum adds up every series of a counter.
func counterSum(t testing.TB, f *fixture, name string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, fam := range families {
		if fam.GetName() == name {
			for _, m := range fam.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func gauge(t testing.TB, f *fixture, name string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == name {
			return fam.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
