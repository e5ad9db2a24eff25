package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/bearer"
	"github.com/sandkey/sandkey/pkg/dirwatch"
)

// OriginDir labels candidates read from the token directory. Session
// origins are the session package's.
const OriginDir = "dir"

// Rejection reasons of this package; verification failures use auth's
// (auth.ReasonOf).
const (
	ReasonStale      = "stale"       // gen lower than the current token's
	ReasonOutsideDir = "outside_dir" // a symlink leaves the directory
	ReasonTooLarge   = "too_large"   // file over tokendir.MaxFileSize
	ReasonNotRegular = "not_regular" // FIFO, device, directory...
	ReasonUnreadable = "unreadable"  // any other read failure
)

// ErrStale is returned by Offer for a token older than the current one.
var ErrStale = errors.New("token generation is older than the current one")

// Config configures a Source.
type Config struct {
	// SandboxID is the sandbox whose tokens are accepted. Required.
	SandboxID string
	// Dir is the token directory; "" means no directory channel (static
	// mode, or tokens from the session only).
	Dir string
	// Issuer, Audience and TrustDomain are passed to auth.Verifier: ""
	// still requires the claim, with any value.
	Issuer, Audience, TrustDomain string
	// PollInterval is how often Dir is re-read regardless of fsnotify.
	// 0 detects it: 1 s on FUSE or virtio-fs, 30 s elsewhere.
	PollInterval time.Duration
	// UnwatchedPollInterval is how often Dir is re-read while it is not
	// watched (no inotify instance, or the directory missing), when that
	// is shorter than PollInterval; DefaultUnwatchedPollInterval when 0.
	UnwatchedPollInterval time.Duration
	// Watcher is the process's shared inotify instance (see dirwatch).
	// When nil, the Source makes one of its own and closes it.
	Watcher *dirwatch.Watcher
	// Now is the clock for expiry checks (default time.Now).
	Now func() time.Time
	// Logger receives acceptances and rejections (default: discard). The
	// source adds no sandbox field: give it a logger that names the sandbox.
	Logger *zap.Logger
	// Registerer, when set, gets the source's metrics.
	Registerer prometheus.Registerer

	// noWatch turns fsnotify off, for tests of the poll path.
	noWatch bool
}

// Source holds the newest valid token of one sandbox. It is safe for
// concurrent use.
type Source struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	current atomic.Pointer[auth.Token]

	mu          sync.Mutex // serializes candidates; guards the fields below
	dirKeys     *auth.JWKS // the directory's jwks.json, last parsed
	sessionKeys *auth.JWKS // the JWKS the session sent last
	rejected    bool       // the gateway refused the current token
	lastDirFail string     // the directory's last rejection, to report it once
	subs        map[*subscriber]struct{}
	closed      bool

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type subscriber struct{ ch chan *auth.Token }

// New returns a Source for cfg. It reads the directory once (an absent or
// bad token is logged, not fatal: the session may still deliver one) and
// starts watching and polling it until Close is called or ctx ends.
func New(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.SandboxID == "" {
		return nil, errors.New("new token source: empty sandbox id")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.UnwatchedPollInterval <= 0 {
		cfg.UnwatchedPollInterval = DefaultUnwatchedPollInterval
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new token source for %s: %w", cfg.SandboxID, err)
	}
	s := &Source{
		cfg:     cfg,
		log:     cfg.Logger, // names the sandbox already (the supervisor's root logger)
		metrics: m,
		subs:    map[*subscriber]struct{}{},
		done:    make(chan struct{}),
	}
	if cfg.Dir == "" {
		close(s.done)
		s.cancel = func() {}
		return s, nil
	}
	// Watch first: a write landing between the first read and the watch
	// would otherwise wait for the next poll.
	w := s.startWatching()
	s.readDir()
	interval := s.pollInterval()
	ctx, s.cancel = context.WithCancel(ctx)
	go s.watch(ctx, w, interval)
	return s, nil
}

// Current returns the newest accepted token, nil if none. It may have
// expired when nothing newer came.
func (s *Source) Current() *auth.Token {
	return s.current.Load()
}

// Offer proposes a token received from origin (the session), with the
// gateway's JWKS when it sent one: those keys are trusted from now on,
// beside the directory's. It returns nil when the token is now current or
// has the current gen, and an error saying why it was rejected otherwise.
func (s *Source) Offer(raw string, jwks []byte, origin string) error {
	var keys *auth.JWKS
	if len(jwks) > 0 {
		var err error
		if keys, err = auth.ParseJWKS(jwks); err != nil {
			// The token may still verify with the keys known already.
			s.log.Warn("JWKS offered with a token is unusable; keeping the known keys",
				zap.String("origin", origin), zap.Error(err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys != nil {
		s.sessionKeys = keys
	}
	return s.consider(raw, origin)
}

// MarkRejected records that the gateway refused the current token (expired
// or superseded): the next valid candidate wins whatever its gen.
func (s *Source) MarkRejected() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.rejected {
		s.log.Info("gateway rejected the current token; the next valid token wins whatever its generation",
			zap.Stringer("current", s.current.Load()))
	}
	s.rejected = true
	s.lastDirFail = "" // a stale token in the directory may be the way back now
}

// consider applies the acceptance rules to one candidate. s.mu is held.
func (s *Source) consider(raw, origin string) error {
	cur := s.current.Load()
	if cur != nil && raw == cur.Raw() {
		return nil // the token held, read again
	}
	v := auth.Verifier{
		Keys:        auth.MergeResolvers(s.dirKeys, s.sessionKeys),
		Issuer:      s.cfg.Issuer,
		Audience:    s.cfg.Audience,
		TrustDomain: s.cfg.TrustDomain,
		Now:         s.cfg.Now,
	}
	tok, err := v.Verify(raw, s.cfg.SandboxID)
	if err != nil {
		return s.reject(origin, auth.ReasonOf(err), raw, err)
	}
	if cur != nil && !s.rejected {
		switch {
		case tok.Gen() == cur.Gen():
			return nil
		case tok.Gen() < cur.Gen():
			return s.reject(origin, ReasonStale, raw, fmt.Errorf("%w (gen %d < %d)", ErrStale, tok.Gen(), cur.Gen()))
		}
	}
	s.accept(tok, origin, cur)
	return nil
}

func (s *Source) accept(tok *auth.Token, origin string, previous *auth.Token) {
	s.current.Store(tok)
	s.rejected = false
	if origin == OriginDir {
		s.lastDirFail = ""
	}
	s.metrics.accepted.WithLabelValues(origin).Inc()
	s.metrics.generation.Set(float64(tok.Gen()))
	s.log.Info("token accepted", zap.String("origin", origin), zap.Uint64("gen", tok.Gen()),
		zap.String("jti", tok.JTI()), zap.Time("exp", tok.ExpiresAt()), zap.Stringer("previous", previous))
	for sub := range s.subs {
		// Newest wins: drop an unread older token, then send. The send
		// cannot block: s.mu makes this the channel's only sender.
		select {
		case <-sub.ch:
		default:
		}
		sub.ch <- tok
	}
}

// reject logs and counts a refused candidate (raw is "" when the directory
// could not be read). The directory's same failure is counted once. s.mu is
// held.
func (s *Source) reject(origin, reason, raw string, err error) error {
	err = fmt.Errorf("token from %s rejected (%s): %w", origin, reason, err)
	level := zapcore.WarnLevel
	if reason == ReasonStale {
		level = zapcore.DebugLevel // the slower channel lagging, not a fault
	}
	count := true
	if origin == OriginDir {
		key := reason + "\x00" + raw + "\x00" + err.Error()
		if key == s.lastDirFail {
			level, count = zapcore.DebugLevel, false
		}
		s.lastDirFail = key
	}
	if count {
		s.metrics.rejected.WithLabelValues(reason, origin).Inc()
	}
	fields := []zap.Field{zap.String("origin", origin), zap.String("reason", reason), zap.Error(err),
		zap.Stringer("current", s.current.Load())}
	if gen, jti, ok := peek(raw); ok {
		fields = append(fields, zap.Uint64("gen", gen), zap.String("jti", jti))
	}
	s.log.Log(level, "token rejected; keeping the current one", fields...)
	return err
}

// peek reads gen and jti from a token that failed verification, for the
// log only. It returns false for anything that does not parse.
func peek(raw string) (gen uint64, jti string, ok bool) {
	if len(raw) > auth.MaxTokenSize || strings.Count(raw, ".") != 2 {
		return 0, "", false
	}
	var c auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return 0, "", false
	}
	return c.Gen, c.ID, true
}

// readDir reads the directory's jwks.json and token and considers the
// token. A missing token is no candidate; any other failure is a rejection.
func (s *Source) readDir() {
	raw, err := tokendir.ReadToken(s.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Debug("no token in the directory yet", zap.String("dir", s.cfg.Dir), zap.Error(err))
		return
	}
	// jwks.json second: read after the token, it is at least as new, and a
	// newer set still holds the keys of older tokens.
	keys := s.readDirKeys()

	s.mu.Lock()
	defer s.mu.Unlock()
	if keys != nil {
		s.dirKeys = keys
	}
	if err != nil {
		s.reject(OriginDir, readReason(err), "", err)
		return
	}
	s.consider(strings.TrimSpace(string(raw)), OriginDir)
}

func (s *Source) readDirKeys() *auth.JWKS {
	data, err := tokendir.ReadFile(s.cfg.Dir, tokendir.JWKSFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		var keys *auth.JWKS
		if keys, err = auth.ParseJWKS(data); err == nil {
			return keys
		}
	}
	s.log.Warn("the directory's JWKS is unusable; keeping the known keys", zap.String("dir", s.cfg.Dir), zap.Error(err))
	return nil
}

func readReason(err error) string {
	switch {
	case errors.Is(err, tokendir.ErrOutsideDir):
		return ReasonOutsideDir
	case errors.Is(err, tokendir.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, tokendir.ErrNotRegular):
		return ReasonNotRegular
	}
	return ReasonUnreadable
}

// Subscribe returns a channel that receives every token accepted from now
// on, the current one first if there is one. It holds one token: an
// unread one is replaced by a newer one, so a slow reader sees the newest.
// cancel stops and closes the channel; Close closes every channel.
func (s *Source) Subscribe() (<-chan *auth.Token, func()) {
	sub := &subscriber{ch: make(chan *auth.Token, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(sub.ch)
		return sub.ch, func() {}
	}
	if cur := s.current.Load(); cur != nil {
		sub.ch <- cur
	}
	s.subs[sub] = struct{}{}
	return sub.ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[sub]; ok {
			delete(s.subs, sub)
			close(sub.ch)
		}
	}
}

// PerRPCCredentials returns gRPC call credentials that send
// "authorization: Bearer <current token>", read on every call. They fail
// the call with Unauthenticated while there is no token. They do not
// require transport security: the session runs over a per-sandbox unix
// socket or vsock, or TLS chosen by the operator.
func (s *Source) PerRPCCredentials() credentials.PerRPCCredentials {
	return bearer.Credentials{Token: func() (string, error) {
		tok := s.Current()
		if tok == nil {
			return "", status.Errorf(codes.Unauthenticated, "sandbox %s has no token yet", s.cfg.SandboxID)
		}
		return tok.Raw(), nil
	}}
}

// Close stops watching and polling, waits for that to end, and closes the
// subscribers' channels. Current keeps answering. Close is idempotent.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		for sub := range s.subs {
			delete(s.subs, sub)
			close(sub.ch)
		}
	})
	return nil
}
