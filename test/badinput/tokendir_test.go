package badinput

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/store"
)

// forger mints tokens with the gateway's own active signing key, read from
// its store: a token it makes is genuine but for the claims it is given
// (an expiry in the past, a generation the gateway never issued), so a
// supervisor refusing it refuses it for that reason alone.
type forger struct {
	key *auth.SigningKey
}

func newForger(t *testing.T, state string) *forger {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(state, gateway.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, err := st.ActiveKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.KeyFromSeed(k.Seed, k.CreatedAt)
	if err != nil {
		t.Fatal(err)
	}
	return &forger{key: key}
}

// mint signs a token of sandboxID and gen with the gateway's claims,
// issued at iat and living lifetime.
func (f *forger) mint(t *testing.T, key *auth.SigningKey, sandboxID string, gen uint64, iat time.Time, lifetime time.Duration) string {
	t.Helper()
	if key == nil {
		key = f.key
	}
	iss, err := auth.NewIssuer(auth.IssuerConfig{Keys: auth.NewKeySet(key), Issuer: gateway.DefaultIssuer,
		Audience: gateway.DefaultAudience, TrustDomain: gateway.DefaultTrustDomain, Lifetime: lifetime,
		Now: func() time.Time { return iat }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint(sandboxID, gen)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Raw()
}

// claims are the gateway's claims for sandboxID at gen, valid for an hour.
func claims(sandboxID string, gen uint64) auth.Claims {
	now := time.Now()
	return auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: gateway.DefaultIssuer, Audience: jwt.ClaimStrings{gateway.DefaultAudience},
			Subject:  auth.Subject(gateway.DefaultTrustDomain, sandboxID),
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), ID: "forged-" + sandboxID,
		},
		SandboxID: sandboxID, Gen: gen,
	}
}

// signWith signs claims with method and key, with the gateway's kid.
func signWith(t *testing.T, method jwt.SigningMethod, key any, kid string, c auth.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	tok.Header["kid"], tok.Header["typ"] = kid, auth.TokenType
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// raiseGen returns raw with its payload's gen raised by n and the
// original signature kept.
func raiseGen(t *testing.T, raw string, n uint64) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	m["gen"] = m["gen"].(float64) + float64(n)
	payload, _ = json.Marshal(m)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

// replaceToken makes dir/token what make creates at dir/.badinput-tmp,
// through a rename, as a writer would: the supervisor's watch sees it.
func replaceToken(t *testing.T, dir string, make func(tmp string) error) {
	t.Helper()
	tmp := filepath.Join(dir, "badinput-tmp")
	os.Remove(tmp)
	if err := make(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, tokendir.TokenFile)); err != nil {
		t.Fatal(err)
	}
}

func fileWith(data []byte) func(string) error {
	return func(tmp string) error { return os.WriteFile(tmp, data, 0o400) }
}

func TestTamperedTokenDirectoryKeepsTheSupervisorsTokenAndIsLogged(t *testing.T) {
	l := startLive(t, "victim", "bystander")
	f := newForger(t, l.state)
	victim := l.ids["victim"]
	stranger, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(l.dir, "outside-token")

	for _, tc := range []struct {
		name   string
		reason string // the rejection's reason in the supervisor's log
		// tamper writes into the token directory; forged is the token it
		// planted, if any, which must never be logged.
		tamper func(t *testing.T, dir string, gen uint64) (forged string)
	}{
		{"corrupt JWT", auth.ReasonMalformed, func(t *testing.T, dir string, _ uint64) string {
			replaceToken(t, dir, fileWith([]byte("eyJhbGciOiJFZERTQSJ9.not-base64!.sig")))
			return ""
		}},
		{"binary garbage", auth.ReasonMalformed, func(t *testing.T, dir string, _ uint64) string {
			junk := make([]byte, 512)
			rand.Read(junk)
			replaceToken(t, dir, fileWith(junk))
			return ""
		}},
		{"another sandbox's valid token", auth.ReasonSandboxMismatch, func(t *testing.T, dir string, _ uint64) string {
			raw, err := tokendir.ReadToken(l.tokenDir("bystander"))
			if err != nil {
				t.Fatal(err)
			}
			replaceToken(t, dir, fileWith(raw))
			return string(raw)
		}},
		{"newer generation signed by an unknown key", auth.ReasonUnknownKey, func(t *testing.T, dir string, gen uint64) string {
			raw := f.mint(t, stranger, victim, gen+5, time.Now(), time.Hour)
			replaceToken(t, dir, fileWith([]byte(raw)))
			return raw
		}},
		{"alg none", auth.ReasonAlgorithm, func(t *testing.T, dir string, gen uint64) string {
			raw := signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, f.key.KID, claims(victim, gen+5))
			replaceToken(t, dir, fileWith([]byte(raw)))
			return raw
		}},
		{"HS256 keyed with the gateway's public key", auth.ReasonAlgorithm, func(t *testing.T, dir string, gen uint64) string {
			raw := signWith(t, jwt.SigningMethodHS256, []byte(f.key.Public), f.key.KID, claims(victim, gen+5))
			replaceToken(t, dir, fileWith([]byte(raw)))
			return raw
		}},
		{"newer generation, payload altered after signing", auth.ReasonSignature, func(t *testing.T, dir string, _ uint64) string {
			raw, err := tokendir.ReadToken(dir)
			if err != nil {
				t.Fatal(err)
			}
			forged := raiseGen(t, string(raw), 5)
			replaceToken(t, dir, fileWith([]byte(forged)))
			return forged
		}},
		{"newer generation, genuine signature, expired", auth.ReasonExpired, func(t *testing.T, dir string, gen uint64) string {
			raw := f.mint(t, nil, victim, gen+5, time.Now().Add(-2*time.Hour), auth.MinLifetime)
			replaceToken(t, dir, fileWith([]byte(raw)))
			return raw
		}},
		{"oversized file", "too_large", func(t *testing.T, dir string, _ uint64) string {
			replaceToken(t, dir, fileWith([]byte(strings.Repeat("a", tokendir.MaxFileSize+1))))
			return ""
		}},
		{"FIFO instead of a file", "not_regular", func(t *testing.T, dir string, _ uint64) string {
			replaceToken(t, dir, func(tmp string) error { return unix.Mkfifo(tmp, 0o600) })
			return ""
		}},
		{"symlink to a valid newer token outside the directory", "outside_dir", func(t *testing.T, dir string, gen uint64) string {
			raw := f.mint(t, nil, victim, gen+5, time.Now(), time.Hour)
			if err := os.WriteFile(outside, []byte(raw), 0o400); err != nil {
				t.Fatal(err)
			}
			replaceToken(t, dir, func(tmp string) error { return os.Symlink(outside, tmp) })
			return raw
		}},
		{"relative symlink climbing out of the directory", "outside_dir", func(t *testing.T, dir string, gen uint64) string {
			raw := f.mint(t, nil, victim, gen+6, time.Now(), time.Hour)
			if err := os.WriteFile(outside, []byte(raw), 0o400); err != nil {
				t.Fatal(err)
			}
			rel, err := filepath.Rel(dir, outside)
			if err != nil {
				t.Fatal(err)
			}
			replaceToken(t, dir, func(tmp string) error { return os.Symlink(rel, tmp) })
			return raw
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := l.tokenDir("victim")
			before := l.status("victim")
			offset := l.logSize("victim")
			forged := tc.tamper(t, dir, before.Gen)
			eventually(t, 10*time.Second, "the supervisor logs a rejection: "+tc.reason, func() bool {
				for _, e := range rejections(l.supervisorLog("victim", offset)) {
					if e.Reason == tc.reason && e.Origin == "dir" {
						return true
					}
				}
				return false
			})
			if after := l.status("victim"); after.Gen != before.Gen || after.JTI != before.JTI || after.TokenExpired {
				t.Errorf("status after tampering %+v, want gen %d jti %s kept", after, before.Gen, before.JTI)
			}
			if forged != "" && loggedToken(l.supervisorLog("victim", offset), forged) {
				t.Error("the supervisor logged the planted token")
			}
			l.checkRecovers(t, "victim")
		})
	}

	t.Run("directory replaced by a file", func(t *testing.T) {
		dir := l.tokenDir("victim")
		before := l.status("victim")
		moved := dir + ".moved"
		if err := os.Rename(dir, moved); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, []byte("not a directory\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The write fails, naming the directory, and the gateway leaves
		// the file alone; the session delivers the new generation, so the
		// supervisor moves to it from its current token, which it kept,
		// and rotate says both and succeeds: the sandbox holds the token.
		r := runGateway(t, nil, "--state-dir", l.state, "sandbox", "rotate", "victim")
		checkClearError(t, r, 0, "into the token directory failed", dir, "delivered over its session")
		if data, err := os.ReadFile(dir); err != nil || string(data) != "not a directory\n" {
			t.Errorf("the gateway touched the file in the directory's place: %q, %v", data, err)
		}
		var latest uint64
		for _, sb := range l.list() {
			if sb.Name == "victim" {
				latest = sb.LatestGen
			}
		}
		if latest != before.Gen+1 {
			t.Fatalf("latest generation %d after the failed write, want %d committed", latest, before.Gen+1)
		}
		eventually(t, 10*time.Second, "the session delivers the generation the directory could not take", func() bool {
			return l.status("victim").Gen == latest
		})
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(moved, dir); err != nil {
			t.Fatal(err)
		}
		l.checkRecovers(t, "victim")
	})

	// The bystander never noticed.
	for _, sb := range l.list() {
		if st := l.status(sb.Name); sb.Name == "bystander" && (st.Gen != 1 || !sb.Connected || sb.LatestGen != 1) {
			t.Errorf("bystander %+v with status %+v, want gen 1 held and connected", sb, st)
		}
	}
}

// checkRecovers rotates a sandbox and waits for its supervisor to hold the
// new generation, read back from the directory too: the gateway's writer
// repaired whatever a test left in the directory.
func (l *live) checkRecovers(t *testing.T, name string) {
	t.Helper()
	out := l.cli("sandbox", "rotate", name, "-o", "json")
	var rotated struct{ Gen uint64 }
	if err := json.Unmarshal([]byte(out), &rotated); err != nil {
		t.Fatalf("rotate -o json: %v: %s", err, out)
	}
	eventually(t, 10*time.Second, "the supervisor holds the rotated generation", func() bool {
		return l.status(name).Gen == rotated.Gen
	})
	raw, err := tokendir.ReadToken(l.tokenDir(name))
	if err != nil {
		t.Fatalf("read %s's token directory after the rotation: %v", name, err)
	}
	tok, err := auth.ParseUnverified(string(raw))
	if err != nil || tok.Gen() != rotated.Gen {
		t.Fatalf("%s's directory holds %v (%v) after the rotation, want gen %d", name, tok, err, rotated.Gen)
	}
}

// loggedToken reports whether text holds raw or its signature.
func loggedToken(text, raw string) bool {
	sig := raw[strings.LastIndexByte(raw, '.')+1:]
	return strings.Contains(text, raw) || (len(sig) > 16 && strings.Contains(text, sig))
}
