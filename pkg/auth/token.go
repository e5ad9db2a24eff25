package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sandkey/sandkey/pkg/randid"
)

const (
	// MinLifetime is the shortest token lifetime accepted; tests use it.
	MinLifetime = 10 * time.Second
	// DefaultLifetime is the token lifetime when none is configured.
	DefaultLifetime = time.Hour
	// Leeway is the clock skew tolerated on exp, nbf and iat.
	Leeway = 30 * time.Second
	// TokenType is the JWS "typ" header of every sandkey token.
	TokenType = "sandkey+jwt"
	// MaxTokenSize caps a raw token, as the token directory caps its files.
	MaxTokenSize = 64 << 10
	// jtiBytes is the size of a token's random jti.
	jtiBytes = 16

	algorithm = "EdDSA"
)

// Claims are the claims of a sandbox token.
type Claims struct {
	jwt.RegisteredClaims
	SandboxID string `json:"sandbox_id"`
	Gen       uint64 `json:"gen"`
}

// Token is a verified or freshly minted sandbox token. Its String form
// names the generation and jti only, so a Token can be logged as it is.
type Token struct {
	raw    string
	claims Claims
	kid    string // the header's key id
}

// KID is the id of the key that signed the token (its header's kid): the
// one to record, rather than the key set's active key, which a concurrent
// rotation may have changed since.
func (t *Token) KID() string { return t.kid }

// Raw returns the signed JWT. Never log it.
func (t *Token) Raw() string { return t.raw }

// Claims returns a copy of the token's claims.
func (t *Token) Claims() Claims { return t.claims }

// Gen returns the token's generation.
func (t *Token) Gen() uint64 { return t.claims.Gen }

// JTI returns the token's unique id.
func (t *Token) JTI() string { return t.claims.ID }

// SandboxID returns the sandbox the token was minted for.
func (t *Token) SandboxID() string { return t.claims.SandboxID }

// ExpiresAt returns the token's expiry.
func (t *Token) ExpiresAt() time.Time { return t.claims.ExpiresAt.Time }

// IssuedAt returns when the token was minted.
func (t *Token) IssuedAt() time.Time { return t.claims.IssuedAt.Time }

// String identifies the token without revealing it.
func (t *Token) String() string {
	if t == nil {
		return "<no token>"
	}
	return fmt.Sprintf("sandbox=%s gen=%d jti=%s exp=%s", t.claims.SandboxID, t.claims.Gen, t.claims.ID,
		t.claims.ExpiresAt.UTC().Format(time.RFC3339))
}

// Subject returns the SPIFFE ID a sandbox's tokens carry as sub.
func Subject(trustDomain, sandboxID string) string {
	return "spiffe://" + trustDomain + "/sandbox/" + sandboxID
}

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	Keys        *KeySet
	Issuer      string
	Audience    string
	TrustDomain string
	Lifetime    time.Duration // DefaultLifetime when zero is not wanted: zero is refused
	Now         func() time.Time
}

// CheckLifetime refuses lifetimes under MinLifetime: there are no
// non-expiring tokens.
func CheckLifetime(d time.Duration) error {
	if d < MinLifetime {
		return fmt.Errorf("token lifetime %s: must be at least %s (tokens always expire)", d, MinLifetime)
	}
	return nil
}

// Issuer mints sandbox tokens with the active key of its key set.
type Issuer struct {
	cfg IssuerConfig
}

// NewIssuer checks cfg and returns an Issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if cfg.Keys == nil {
		return nil, errors.New("new issuer: no key set")
	}
	if err := CheckLifetime(cfg.Lifetime); err != nil {
		return nil, fmt.Errorf("new issuer: %w", err)
	}
	for name, v := range map[string]string{"issuer": cfg.Issuer, "audience": cfg.Audience, "trust domain": cfg.TrustDomain} {
		if v == "" {
			return nil, fmt.Errorf("new issuer: %s is empty", name)
		}
	}
	if strings.ContainsAny(cfg.TrustDomain, "/:") {
		return nil, fmt.Errorf("new issuer: trust domain %q must be a bare name without '/' or ':'", cfg.TrustDomain)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Issuer{cfg: cfg}, nil
}

// Lifetime returns the lifetime of the tokens the issuer mints.
func (i *Issuer) Lifetime() time.Duration { return i.cfg.Lifetime }

// Keys returns the issuer's key set.
func (i *Issuer) Keys() *KeySet { return i.cfg.Keys }

// Verifier returns a verifier matching what this issuer mints.
func (i *Issuer) Verifier() *Verifier {
	return &Verifier{Keys: i.cfg.Keys, Issuer: i.cfg.Issuer, Audience: i.cfg.Audience,
		TrustDomain: i.cfg.TrustDomain, Now: i.cfg.Now}
}

// Mint signs a token of generation gen for sandboxID.
func (i *Issuer) Mint(sandboxID string, gen uint64) (*Token, error) {
	if sandboxID == "" {
		return nil, errors.New("mint token: empty sandbox id")
	}
	if gen == 0 {
		return nil, fmt.Errorf("mint token for %s: generation 0 is reserved for \"no token\"", sandboxID)
	}
	key := i.cfg.Keys.Active()
	if key == nil {
		return nil, fmt.Errorf("mint token for %s: %w", sandboxID, ErrNoActiveKey)
	}
	jti := randid.New(jtiBytes)
	now := i.cfg.Now().Truncate(time.Second)
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.cfg.Issuer,
			Subject:   Subject(i.cfg.TrustDomain, sandboxID),
			Audience:  jwt.ClaimStrings{i.cfg.Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(i.cfg.Lifetime)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        jti,
		},
		SandboxID: sandboxID,
		Gen:       gen,
	}
	raw, err := signCompact(key, claims)
	if err != nil {
		return nil, fmt.Errorf("mint token for %s gen %d: %w", sandboxID, gen, err)
	}
	return &Token{raw: raw, claims: claims, kid: key.KID}, nil
}

// StoredClaims are what the store keeps of a minted token: enough, with the
// issuer's configuration, to sign it again byte for byte.
type StoredClaims struct {
	SandboxID string
	Gen       uint64
	JTI       string
	KID       string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// ErrUnknownSigner: Resign was asked for a key whose private half the key
// set does not hold (retired, or not loaded yet).
var ErrUnknownSigner = errors.New("signing key not held")

// Resign signs again the token that Mint made from these claims, with the
// key that signed it: Ed25519 signatures are deterministic, so the result
// is the same bytes as the original, provided the issuer, audience and
// trust domain are the same. Replicas use it to hand out a generation
// another replica minted without any token leaving that replica.
func (i *Issuer) Resign(c StoredClaims) (*Token, error) {
	if c.SandboxID == "" || c.Gen == 0 || c.JTI == "" {
		return nil, fmt.Errorf("re-sign token: sandbox %q gen %d jti %q: sandbox, generation and jti are required",
			c.SandboxID, c.Gen, c.JTI)
	}
	key, ok := i.cfg.Keys.Signer(c.KID)
	if !ok {
		return nil, fmt.Errorf("re-sign token for %s gen %d: key %s: %w", c.SandboxID, c.Gen, c.KID, ErrUnknownSigner)
	}
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.cfg.Issuer,
			Subject:   Subject(i.cfg.TrustDomain, c.SandboxID),
			Audience:  jwt.ClaimStrings{i.cfg.Audience},
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			NotBefore: jwt.NewNumericDate(c.IssuedAt),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ID:        c.JTI,
		},
		SandboxID: c.SandboxID,
		Gen:       c.Gen,
	}
	raw, err := signCompact(key, claims)
	if err != nil {
		return nil, fmt.Errorf("re-sign token for %s gen %d: %w", c.SandboxID, c.Gen, err)
	}
	return &Token{raw: raw, claims: claims, kid: key.KID}, nil
}

// signCompact encodes and signs a compact JWS by hand. The header is fixed
// per key and the claims have a fixed shape, so building them through
// generic JSON maps on every mint would cost a third of the signature's
// own time (see BenchmarkMint beside BenchmarkRawEd25519Sign).
func signCompact(key *SigningKey, c Claims) (string, error) {
	header := `{"alg":"EdDSA","kid":"` + key.KID + `","typ":"` + TokenType + `"}`
	payload := appendClaims(make([]byte, 0, 320), c)
	enc := base64.RawURLEncoding
	hlen, plen := enc.EncodedLen(len(header)), enc.EncodedLen(len(payload))
	buf := make([]byte, hlen+1+plen, hlen+1+plen+1+enc.EncodedLen(ed25519.SignatureSize))
	enc.Encode(buf, []byte(header))
	buf[hlen] = '.'
	enc.Encode(buf[hlen+1:], payload)
	sig := ed25519.Sign(key.Private, buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// appendClaims encodes the claims a Mint sets, in the JSON the verifier
// parses back (TestMintedTokenVerifiesWithAllClaims pins the round trip).
func appendClaims(b []byte, c Claims) []byte {
	b = append(b, `{"iss":`...)
	b = appendJSONString(b, c.Issuer)
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.Subject)
	b = append(b, `,"aud":[`...)
	for i, a := range c.Audience {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, a)
	}
	b = append(b, `],"exp":`...)
	b = strconv.AppendInt(b, c.ExpiresAt.Unix(), 10)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, c.NotBefore.Unix(), 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt.Unix(), 10)
	b = append(b, `,"jti":`...)
	b = appendJSONString(b, c.ID)
	b = append(b, `,"sandbox_id":`...)
	b = appendJSONString(b, c.SandboxID)
	b = append(b, `,"gen":`...)
	b = strconv.AppendUint(b, c.Gen, 10)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. Plain printable ASCII, all
// an id or URL here ever holds, is copied as it is; anything else goes
// through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Verification failure reasons, as VerifyError.Reason and metric labels.
const (
	ReasonMalformed       = "malformed"
	ReasonAlgorithm       = "algorithm"
	ReasonType            = "type"
	ReasonUnknownKey      = "unknown_key"
	ReasonSignature       = "signature"
	ReasonClaims          = "claims"
	ReasonExpired         = "expired"
	ReasonNotYetValid     = "not_yet_valid"
	ReasonSandboxMismatch = "sandbox_mismatch"
)

// Sentinel errors matched by errors.Is through a VerifyError.
var (
	ErrMalformed       = errors.New("token is malformed")
	ErrAlgorithm       = errors.New("token algorithm is not EdDSA")
	ErrType            = errors.New("token type is not " + TokenType)
	ErrUnknownKey      = errors.New("token is signed by an unknown key")
	ErrSignature       = errors.New("token signature is invalid")
	ErrClaims          = errors.New("token claims are invalid")
	ErrExpired         = errors.New("token has expired")
	ErrNotYetValid     = errors.New("token is not valid yet")
	ErrSandboxMismatch = errors.New("token belongs to another sandbox")
)

var reasonErrors = map[string]error{
	ReasonMalformed: ErrMalformed, ReasonAlgorithm: ErrAlgorithm, ReasonType: ErrType,
	ReasonUnknownKey: ErrUnknownKey, ReasonSignature: ErrSignature, ReasonClaims: ErrClaims,
	ReasonExpired: ErrExpired, ReasonNotYetValid: ErrNotYetValid, ReasonSandboxMismatch: ErrSandboxMismatch,
}

// VerifyError says why a token was refused. Its message never contains the
// token.
type VerifyError struct {
	Reason string
	Detail string
}

func (e *VerifyError) Error() string {
	msg := reasonErrors[e.Reason].Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is makes errors.Is(err, ErrExpired) and friends work.
func (e *VerifyError) Is(target error) bool { return reasonErrors[e.Reason] == target }

func verifyErr(reason, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOther is ReasonOf's answer for an error that is no VerifyError.
const ReasonOther = "other"

// Reasons lists every reason ReasonOf can return, sorted, so that a
// metric can export each one from the start.
func Reasons() []string {
	out := make([]string, 0, len(reasonErrors)+1)
	for r := range reasonErrors {
		out = append(out, r)
	}
	out = append(out, ReasonOther)
	sort.Strings(out)
	return out
}

// ReasonOf returns the reason of a verification error, or ReasonOther.
func ReasonOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ReasonOther
}

// Verifier checks sandbox tokens. An empty Issuer, Audience or TrustDomain
// still requires the claim, with any value.
type Verifier struct {
	Keys        KeyResolver
	Issuer      string
	Audience    string
	TrustDomain string
	Now         func() time.Time
}

// Verify checks raw fully and that it belongs to sandboxID.
func (v *Verifier) Verify(raw, sandboxID string) (*Token, error) {
	return v.verify(raw, sandboxID, true)
}

// VerifyIgnoringExpiry checks everything but exp and nbf. It serves
// attested channels, where a sandbox resumed after days presents the token
// it went to sleep with.
func (v *Verifier) VerifyIgnoringExpiry(raw, sandboxID string) (*Token, error) {
	return v.verify(raw, sandboxID, false)
}

func (v *Verifier) verify(raw, sandboxID string, checkTime bool) (*Token, error) {
	if len(raw) > MaxTokenSize {
		return nil, verifyErr(ReasonMalformed, "%d bytes exceeds the %d-byte limit", len(raw), MaxTokenSize)
	}
	if strings.Count(raw, ".") != 2 {
		return nil, verifyErr(ReasonMalformed, "not a compact JWS (want three dot-separated parts)")
	}
	var claims Claims
	parser := jwt.NewParser(jwt.WithoutClaimsValidation())
	parsed, err := parser.ParseWithClaims(raw, &claims, v.keyFunc)
	if err != nil {
		var ve *VerifyError
		switch {
		case errors.As(err, &ve):
			return nil, ve
		case errors.Is(err, jwt.ErrTokenMalformed):
			return nil, verifyErr(ReasonMalformed, "%v", err)
		case errors.Is(err, jwt.ErrTokenUnverifiable):
			return nil, verifyErr(ReasonAlgorithm, "%v", err)
		default:
			return nil, verifyErr(ReasonSignature, "%v", err)
		}
	}
	if err := v.checkClaims(&claims, sandboxID, checkTime); err != nil {
		return nil, err
	}
	kid, _ := parsed.Header["kid"].(string)
	return &Token{raw: raw, claims: claims, kid: kid}, nil
}

func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	if alg, _ := t.Header["alg"].(string); alg != algorithm || t.Method != jwt.SigningMethodEdDSA {
		return nil, verifyErr(ReasonAlgorithm, "header alg %q", t.Header["alg"])
	}
	if typ, _ := t.Header["typ"].(string); typ != TokenType {
		return nil, verifyErr(ReasonType, "header typ %q", t.Header["typ"])
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, verifyErr(ReasonUnknownKey, "header has no kid")
	}
	if v.Keys == nil {
		return nil, verifyErr(ReasonUnknownKey, "kid %q: no keys known", kid)
	}
	pub, ok := v.Keys.PublicKey(kid)
	if !ok {
		return nil, verifyErr(ReasonUnknownKey, "kid %q", kid)
	}
	return ed25519.PublicKey(pub), nil
}

func (v *Verifier) checkClaims(c *Claims, sandboxID string, checkTime bool) error {
	switch {
	case c.Issuer == "":
		return verifyErr(ReasonClaims, "iss is missing")
	case v.Issuer != "" && c.Issuer != v.Issuer:
		return verifyErr(ReasonClaims, "iss %q, want %q", c.Issuer, v.Issuer)
	case len(c.Audience) == 0:
		return verifyErr(ReasonClaims, "aud is missing")
	case v.Audience != "" && !contains(c.Audience, v.Audience):
		return verifyErr(ReasonClaims, "aud %q does not include %q", []string(c.Audience), v.Audience)
	case c.ExpiresAt == nil:
		return verifyErr(ReasonClaims, "exp is missing")
	case c.IssuedAt == nil:
		return verifyErr(ReasonClaims, "iat is missing")
	case c.ID == "":
		return verifyErr(ReasonClaims, "jti is missing")
	case c.Gen == 0:
		return verifyErr(ReasonClaims, "gen is missing or 0")
	case c.SandboxID == "":
		return verifyErr(ReasonClaims, "sandbox_id is missing")
	case c.SandboxID != sandboxID:
		return verifyErr(ReasonSandboxMismatch, "sandbox_id %q, want %q", c.SandboxID, sandboxID)
	}
	if err := v.checkSubject(c); err != nil {
		return err
	}
	if !checkTime {
		return nil
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if now.After(c.ExpiresAt.Add(Leeway)) {
		return verifyErr(ReasonExpired, "gen %d jti %s expired at %s", c.Gen, c.ID, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if c.NotBefore != nil && now.Add(Leeway).Before(c.NotBefore.Time) {
		return verifyErr(ReasonNotYetValid, "nbf %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.Add(Leeway).Before(c.IssuedAt.Time) {
		return verifyErr(ReasonNotYetValid, "iat %s is in the future", c.IssuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func (v *Verifier) checkSubject(c *Claims) error {
	if c.Subject == "" {
		return verifyErr(ReasonClaims, "sub is missing")
	}
	if v.TrustDomain != "" {
		if want := Subject(v.TrustDomain, c.SandboxID); c.Subject != want {
			return verifyErr(ReasonClaims, "sub %q, want %q", c.Subject, want)
		}
		return nil
	}
	rest, ok := strings.CutPrefix(c.Subject, "spiffe://")
	if !ok || !strings.HasSuffix(rest, "/sandbox/"+c.SandboxID) || strings.HasPrefix(rest, "/") {
		return verifyErr(ReasonClaims, "sub %q is not spiffe://<trust-domain>/sandbox/%s", c.Subject, c.SandboxID)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ParseUnverified decodes a token's claims WITHOUT checking its signature
// or anything else. It serves the supervisor's static mode, which holds a
// token it has no keys for and only needs its generation and expiry for
// its status; nothing may trust what it returns.
func ParseUnverified(raw string) (*Token, error) {
	if len(raw) > MaxTokenSize {
		return nil, verifyErr(ReasonMalformed, "%d bytes exceeds the %d-byte limit", len(raw), MaxTokenSize)
	}
	var claims Claims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &claims); err != nil {
		return nil, verifyErr(ReasonMalformed, "%v", err)
	}
	if claims.ExpiresAt == nil {
		return nil, verifyErr(ReasonClaims, "exp is missing")
	}
	return &Token{raw: raw, claims: claims}, nil
}
