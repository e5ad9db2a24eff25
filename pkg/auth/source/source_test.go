package source

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

const originPush = "session-push"

// forge signs claims with any method and key, with the header a sandkey
// token would carry: what an attacker or a buggy issuer could produce.
func forge(t testing.TB, method jwt.SigningMethod, key any, kid string, claims auth.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = kid
	tok.Header["typ"] = auth.TokenType
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// badCandidates are tokens that break one acceptance rule each, given a
// current token of gen 5; want is the reason they are rejected with.
func badCandidates(f *fixture) []struct {
	name, raw, want string
} {
	t := f.t
	active := f.keys.Active()
	valid := f.mint(6).Claims()
	otherKey, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stranger := f.newIssuer(auth.NewKeySet(otherKey), time.Now)
	past := f.newIssuer(f.keys, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	wrongIssuer, err := auth.NewIssuer(auth.IssuerConfig{Keys: f.keys, Issuer: "someone-else", Audience: audience,
		TrustDomain: trustDomain, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good := f.mint(7).Raw()
	tampered := good[:len(good)-4] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, good[len(good)-4:])
	return []struct{ name, raw, want string }{
		{"not a JWT", "this is not a token", auth.ReasonMalformed},
		{"three garbage parts", "a.b.c", auth.ReasonMalformed},
		{"empty", "", auth.ReasonMalformed},
		{"another sandbox's token", f.mintWith(f.issuer, "sb-2", 6).Raw(), auth.ReasonSandboxMismatch},
		{"signed by an unknown key", f.mintWith(stranger, sandboxID, 6).Raw(), auth.ReasonUnknownKey},
		{"tampered signature", tampered, auth.ReasonSignature},
		{"alg none", forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, active.KID, valid), auth.ReasonAlgorithm},
		{"HS256 keyed with the public key", forge(t, jwt.SigningMethodHS256, []byte(active.Public), active.KID, valid), auth.ReasonAlgorithm},
		{"expired", f.mintWith(past, sandboxID, 6).Raw(), auth.ReasonExpired},
		{"wrong issuer", f.mintWith(wrongIssuer, sandboxID, 6).Raw(), auth.ReasonClaims},
		{"older generation", f.mint(4).Raw(), ReasonStale},
	}
}

func TestOfferRejectsCandidateBreakingAnyRuleAndKeepsCurrent(t *testing.T) {
	f := newFixture(t)
	for _, tc := range badCandidates(f) {
		t.Run(tc.name, func(t *testing.T) {
			s := f.source(func(c *Config) { c.Dir = "" })
			defer s.Close()
			if err := s.Offer(f.mint(5).Raw(), f.jwks(), originPush); err != nil {
				t.Fatal(err)
			}
			before := s.Current()
			err := s.Offer(tc.raw, nil, originPush)
			if err == nil {
				t.Fatalf("Offer accepted it: current %s", s.Current())
			}
			reason := auth.ReasonOf(err)
			if tc.want == ReasonStale && errors.Is(err, ErrStale) {
				reason = ReasonStale
			}
			if reason != tc.want {
				t.Errorf("rejected as %q (%v), want %q", reason, err, tc.want)
			}
			if s.Current() != before {
				t.Errorf("current changed to %s", s.Current())
			}
			if got := f.rejected(tc.want, originPush); got != 1 {
				t.Errorf("rejected{reason=%s,origin=%s} = %v, want 1", tc.want, originPush, got)
			}
			f.reg = newRegistry()
		})
	}
}

func TestOfferAcceptsHigherGenAndTreatsEqualGenAsNoOp(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Dir = "" })
	if s.Current() != nil {
		t.Fatal("a source without directory starts with a token")
	}
	if err := s.Offer(f.mint(5).Raw(), f.jwks(), originPush); err != nil {
		t.Fatal(err)
	}
	five := s.Current()
	if genOf(five) != 5 {
		t.Fatalf("current gen %d, want 5", genOf(five))
	}
	// Another token of the same generation: nothing happens, nothing counted.
	if err := s.Offer(f.mint(5).Raw(), nil, originPush); err != nil {
		t.Fatalf("equal gen: %v, want a no-op", err)
	}
	if s.Current() != five {
		t.Errorf("equal gen replaced the current token")
	}
	six := f.mint(6)
	if err := s.Offer(six.Raw(), nil, originPush); err != nil {
		t.Fatal(err)
	}
	if s.Current().Raw() != six.Raw() {
		t.Errorf("current %s, want gen 6", s.Current())
	}
	if got := f.accepted(originPush); got != 2 {
		t.Errorf("accepted{origin=%s} = %v, want 2", originPush, got)
	}
	if got := gauge(t, f, "sandkey_supervisor_token_generation"); got != 6 {
		t.Errorf("generation gauge = %v, want 6", got)
	}
	if got := counterSum(t, f, "sandkey_supervisor_token_rejected_total"); got != 0 {
		t.Errorf("%v rejections counted, want 0", got)
	}
}

func TestMarkRejectedLetsAnyValidCandidateWinOnce(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Dir = "" })
	five := f.mint(5)
	if err := s.Offer(five.Raw(), f.jwks(), originPush); err != nil {
		t.Fatal(err)
	}
	if err := s.Offer(f.mint(3).Raw(), nil, originPush); !errors.Is(err, ErrStale) {
		t.Fatalf("gen 3 before MarkRejected: %v, want stale", err)
	}

	s.MarkRejected()
	// Still no invalid token, and the rejected token itself is no way out.
	if err := s.Offer(f.mintWith(f.issuer, "sb-2", 9).Raw(), nil, originPush); err == nil {
		t.Fatal("an invalid token was accepted after MarkRejected")
	}
	if err := s.Offer(five.Raw(), nil, originPush); err != nil || s.Current().Raw() != five.Raw() {
		t.Fatalf("re-offering the current token: %v", err)
	}
	three := f.mint(3)
	if err := s.Offer(three.Raw(), nil, originPush); err != nil {
		t.Fatalf("gen 3 after MarkRejected: %v, want accepted", err)
	}
	if s.Current().Raw() != three.Raw() {
		t.Fatalf("current %s, want gen 3", s.Current())
	}
	// Accepting ends the exception.
	if err := s.Offer(f.mint(2).Raw(), nil, originPush); !errors.Is(err, ErrStale) {
		t.Fatalf("gen 2 after recovery: %v, want stale", err)
	}
}

func TestMarkRejectedAcceptsAnOlderTokenWaitingInTheDirectory(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(3).Raw())
	s := f.source(pollOnly(5 * time.Millisecond))
	if err := s.Offer(f.mint(5).Raw(), f.jwks(), originPush); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the directory's gen 3 to be refused as stale", func() bool { return f.rejected(ReasonStale, OriginDir) == 1 })
	s.MarkRejected()
	waitFor(t, "the directory's gen 3 to win", func() bool { return genOf(s.Current()) == 3 })
}

func TestDirectoryTokenIsReadAtStart(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	s := f.source(pollOnly(time.Hour))
	if genOf(s.Current()) != 1 {
		t.Fatalf("current %s right after New, want gen 1", s.Current())
	}
	if got := f.accepted(OriginDir); got != 1 {
		t.Errorf("accepted{origin=dir} = %v, want 1", got)
	}
}

func TestNewStartsWithoutTokenWhenTheDirectoryHasNone(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *fixture)
		reason string // counted rejection, "" for none
	}{
		{"missing directory", func(f *fixture) { os.RemoveAll(f.dir) }, ""},
		{"empty directory", func(f *fixture) {}, ""},
		{"corrupt token", func(f *fixture) { f.write("garbage") }, auth.ReasonMalformed},
		{"expired token", func(f *fixture) {
			f.write(f.mintWith(f.newIssuer(f.keys, func() time.Time { return time.Now().Add(-2 * time.Hour) }), sandboxID, 1).Raw())
		}, auth.ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tt.setup(f)
			s := f.source(pollOnly(time.Hour))
			if s.Current() != nil {
				t.Errorf("current %s, want none", s.Current())
			}
			if tt.reason != "" && f.rejected(tt.reason, OriginDir) != 1 {
				t.Errorf("rejected{reason=%s,origin=dir} = %v, want 1", tt.reason, f.rejected(tt.reason, OriginDir))
			}
			// The session can still deliver.
			if err := s.Offer(f.mint(2).Raw(), f.jwks(), originPush); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDirectoryWriteReachesCurrentThroughFsnotify(t *testing.T) {
	f := newFixture(t)
	s := f.source(watchOnly)
	for gen := uint64(1); gen <= 3; gen++ {
		f.write(f.mint(gen).Raw())
		waitFor(t, "the new token through fsnotify", func() bool { return genOf(s.Current()) == gen })
	}
}

func TestDirectoryWriteReachesCurrentThroughPolling(t *testing.T) {
	f := newFixture(t)
	s := f.source(pollOnly(10 * time.Millisecond))
	for gen := uint64(1); gen <= 3; gen++ {
		f.write(f.mint(gen).Raw())
		waitFor(t, "the new token through polling", func() bool { return genOf(s.Current()) == gen })
	}
}

func TestDirectoryJWKSIsReReadWithEveryChange(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	s := f.source(watchOnly)
	// The gateway rotates its key: the new token is signed with a key the
	// source has never seen, and the new jwks.json carries it.
	next, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.keys.Rotate(next)
	f.write(f.mint(2).Raw())
	waitFor(t, "the token signed by the new key", func() bool { return genOf(s.Current()) == 2 })
}

func TestKeysSentBySessionAreTrustedBesideTheDirectorysKeys(t *testing.T) {
	f := newFixture(t)
	oldJWKS := f.jwks()
	f.write(f.mint(1).Raw())
	s := f.source(pollOnly(5 * time.Millisecond))
	next, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.keys.Rotate(next)
	if err := s.Offer(f.mint(2).Raw(), f.jwks(), originPush); err != nil {
		t.Fatalf("session token signed by the new key, with the new JWKS: %v", err)
	}
	// The directory lags: a new-key token beside the old jwks.json.
	if err := f.writer.Write(map[string][]byte{tokendir.TokenFile: []byte(f.mint(3).Raw()), tokendir.JWKSFile: oldJWKS}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the directory's gen 3, verified with the session's keys", func() bool { return genOf(s.Current()) == 3 })

	// A source that never got the session's keys refuses that token.
	f.reg = newRegistry()
	fresh := f.source(pollOnly(time.Hour))
	if fresh.Current() != nil || f.rejected(auth.ReasonUnknownKey, OriginDir) != 1 {
		t.Fatalf("without the session's keys: current %s, unknown_key rejections %v", fresh.Current(), f.rejected(auth.ReasonUnknownKey, OriginDir))
	}
}

func TestBadDirectoryContentIsRejectedOnceAndKeepsCurrent(t *testing.T) {
	// Each case breaks a directory holding gen 5 of fixture f.
	type breakCase struct {
		name   string
		break_ func(t *testing.T, f *fixture)
		reason string
	}
	replaceToken := func(make func(f *fixture, path string) error) func(t *testing.T, f *fixture) {
		return func(t *testing.T, f *fixture) {
			path := filepath.Join(f.dir, tokendir.TokenFile)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := make(f, path); err != nil {
				t.Fatal(err)
			}
		}
	}
	var cases []breakCase
	for i, c := range badCandidates(newFixture(t)) {
		cases = append(cases, breakCase{c.name, func(t *testing.T, f *fixture) {
			f.write(badCandidates(f)[i].raw) // the same case, minted by f's gateway
		}, c.want})
	}
	cases = append(cases, []breakCase{
		{"oversized file", replaceToken(func(f *fixture, p string) error {
			return os.WriteFile(p, make([]byte, tokendir.MaxFileSize+1), 0o600)
		}), ReasonTooLarge},
		{"token symlinked outside", replaceToken(func(f *fixture, p string) error {
			outside := filepath.Join(filepath.Dir(f.dir), "outside-token")
			if err := os.WriteFile(outside, []byte(f.mint(9).Raw()), 0o600); err != nil {
				return err
			}
			return os.Symlink(outside, p)
		}), ReasonOutsideDir},
		{"FIFO as token", replaceToken(func(f *fixture, p string) error { return syscall.Mkfifo(p, 0o600) }), ReasonNotRegular},
		{"directory replaced by a file", func(t *testing.T, f *fixture) {
			if err := os.RemoveAll(f.dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.dir, []byte(f.mint(9).Raw()), 0o600); err != nil {
				t.Fatal(err)
			}
		}, ReasonUnreadable},
	}...)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.write(f.mint(5).Raw())
			s := f.source(pollOnly(2 * time.Millisecond))
			five := s.Current()
			if genOf(five) != 5 {
				t.Fatalf("current %s, want gen 5", five)
			}
			tc.break_(t, f)
			waitFor(t, "the rejection", func() bool { return f.rejected(tc.reason, OriginDir) >= 1 })
			// Several more polls read the same bad content: still one.
			polls := func() int { return f.logs.FilterMessage("token rejected; keeping the current one").Len() }
			seen := polls()
			waitFor(t, "three more polls", func() bool { return polls() >= seen+3 })
			if got := f.rejected(tc.reason, OriginDir); got != 1 {
				t.Errorf("rejected{reason=%s,origin=dir} = %v after several polls, want 1", tc.reason, got)
			}
			if s.Current() != five {
				t.Errorf("current changed to %s", s.Current())
			}
		})
	}
}

func TestRejectionIsLoggedWithReasonGenAndJTI(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Dir = "" })
	foreign := f.mintWith(f.issuer, "sb-2", 7)
	if err := s.Offer(foreign.Raw(), f.jwks(), originPush); err == nil {
		t.Fatal("accepted another sandbox's token")
	}
	entries := f.logs.FilterMessage("token rejected; keeping the current one").All()
	if len(entries) != 1 {
		t.Fatalf("%d rejection log entries, want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["reason"] != auth.ReasonSandboxMismatch || fields["gen"] != uint64(7) || fields["jti"] != foreign.JTI() || fields["origin"] != originPush {
		t.Errorf("rejection logged with %v", fields)
	}
}

func TestSourceFollowsADirectoryRemovedAndRecreated(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	s := f.source(func(c *Config) { c.PollInterval = 20 * time.Millisecond })
	if err := f.writer.Remove(); err != nil {
		t.Fatal(err)
	}
	w, err := tokendir.NewWriter(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	f.writer = w
	f.write(f.mint(2).Raw())
	waitFor(t, "the token of the recreated directory", func() bool { return genOf(s.Current()) == 2 })
	f.write(f.mint(3).Raw())
	waitFor(t, "the next token", func() bool { return genOf(s.Current()) == 3 })
}

func TestSubscribersSeeTheNewestTokenOnly(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Dir = "" })
	early, cancelEarly := s.Subscribe()
	if err := s.Offer(f.mint(1).Raw(), f.jwks(), originPush); err != nil {
		t.Fatal(err)
	}
	late, cancelLate := s.Subscribe()
	defer cancelLate()
	if tok := <-late; genOf(tok) != 1 {
		t.Fatalf("a new subscriber first gets %s, want the current gen 1", tok)
	}
	for gen := uint64(2); gen <= 4; gen++ {
		if err := s.Offer(f.mint(gen).Raw(), nil, originPush); err != nil {
			t.Fatal(err)
		}
	}
	for name, ch := range map[string]<-chan *auth.Token{"early": early, "late": late} {
		if tok := <-ch; genOf(tok) != 4 {
			t.Errorf("%s subscriber got %s, want the newest, gen 4", name, tok)
		}
		select {
		case tok := <-ch:
			t.Errorf("%s subscriber got a second token %s", name, tok)
		default:
		}
	}
	cancelEarly()
	cancelEarly() // idempotent
	if _, ok := <-early; ok {
		t.Error("a cancelled subscription's channel is open")
	}
	s.Close()
	if _, ok := <-late; ok {
		t.Error("Close left a subscription's channel open")
	}
	if ch, cancel := s.Subscribe(); cancel != nil {
		if _, ok := <-ch; ok {
			t.Error("Subscribe after Close gave an open channel")
		}
	}
}

func TestCloseStopsTheGoroutinesAndIsIdempotent(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	s := f.source(func(c *Config) { c.PollInterval = time.Millisecond })
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t)
	if genOf(s.Current()) != 1 {
		t.Errorf("Current after Close = %s, want the token held", s.Current())
	}
}

func TestCancellingNewsContextStopsTheSource(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, Config{SandboxID: sandboxID, Dir: f.dir, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the source's goroutine outlived its context")
	}
	s.Close()
}

func TestNewRefusesBadConfig(t *testing.T) {
	f := newFixture(t)
	if _, err := New(context.Background(), Config{Dir: f.dir}); err == nil {
		t.Error("New without a sandbox id succeeded")
	}
	s := f.source()
	_, err := New(context.Background(), Config{SandboxID: sandboxID, Dir: f.dir, Registerer: f.reg})
	if err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Errorf("New with metrics already registered: %v", err)
	}
	s.Close()
}

func TestPollIntervalFollowsTheFilesystem(t *testing.T) {
	tests := []struct {
		magic int64
		want  time.Duration
	}{
		{0x65735546, SharedFSPollInterval}, // FUSE, virtio-fs in a Linux guest
		{0x6a656a63, SharedFSPollInterval}, // Docker Desktop's virtio-fs
		{0xef53, LocalPollInterval},        // ext4
		{0x01021994, LocalPollInterval},    // tmpfs
	}
	for _, tt := range tests {
		if got, _ := pollIntervalFor(tt.magic); got != tt.want {
			t.Errorf("magic %#x: %s, want %s", tt.magic, got, tt.want)
		}
	}
	if got, fs := detectPollInterval(t.TempDir()); got != LocalPollInterval {
		t.Errorf("a local temp dir (%s) polls every %s, want %s", fs, got, LocalPollInterval)
	}
	if got, _ := detectPollInterval(filepath.Join(t.TempDir(), "missing")); got != SharedFSPollInterval {
		t.Errorf("a missing dir polls every %s, want %s", got, SharedFSPollInterval)
	}
}
