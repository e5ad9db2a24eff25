package supervisor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/source"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/session"
)

// Auth mode k8s-sa (DESIGN.md §8.1): the pod's projected ServiceAccount
// token, which the kubelet keeps fresh in TokenDir, is traded for a
// sandkey token at the gateway's exchange. The sandkey token lives in
// memory only; pushes over the session replace it as in every mode. A new
// exchange happens, with the newest projected token, whenever the
// sandkey token is missing, refused by the gateway, or expired when a
// call is about to carry it: events, never a timer, start recovery.

const (
	// exchangeTimeout bounds one exchange call.
	exchangeTimeout = 10 * time.Second
	// k8sReconnectMax caps the session's reconnect backoff in this mode.
	// Nothing signals that a gateway behind a TCP address came back (no
	// socket file to watch), so a short cap is what brings a pod back
	// within a second or two of its gateway; a refused connection costs
	// the gateway nothing.
	k8sReconnectMax = time.Second
)

// exchangeSource is the token source of auth mode k8s-sa: a source.Source
// without a directory (it holds and checks the sandkey token), fed by the
// exchange and by the session.
type exchangeSource struct {
	*source.Source
	dir    string
	client *session.ExchangeClient
	log    *zap.Logger
	now    func() time.Time

	rejected atomic.Bool   // the gateway refused the current token
	kick     chan struct{} // wakes the exchange loop, size one
	mu       sync.Mutex    // one exchange at a time
	lastIAT  atomic.Int64  // issued-at of the projected token last seen (Unix s)

	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  sync.Once
}

func newExchangeSource(ctx context.Context, cfg Config, dial []session.DialOption, watcher *dirwatch.Watcher, log *zap.Logger) (*exchangeSource, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	src, err := source.New(ctx, source.Config{SandboxID: cfg.SandboxID, Issuer: cfg.Issuer,
		Audience: cfg.Audience, TrustDomain: cfg.TrustDomain, Now: cfg.Now, Logger: log.Named("source")})
	if err != nil {
		return nil, err
	}
	client, err := session.NewExchangeClient(cfg.Gateway, cfg.SandboxID, dial...)
	if err != nil {
		src.Close()
		return nil, configErr(ExitConfig, "gateway %s: %v", cfg.Gateway, err)
	}
	e := &exchangeSource{Source: src, dir: cfg.TokenDir, client: client, log: log.Named("exchange"),
		now: cfg.Now, kick: make(chan struct{}, 1)}
	ctx, e.cancel = context.WithCancel(ctx)
	e.wg.Go(func() { e.watchProjected(ctx, watcher, cfg.PollInterval) })
	e.wg.Go(func() { e.loop(ctx) })
	return e, nil
}

// loop exchanges whenever the source needs a token: at start, when kicked
// (a refusal, a new projected token), retrying with backoff until it has
// one.
func (e *exchangeSource) loop(ctx context.Context) {
	backoff := session.Backoff{Max: k8sReconnectMax}
	attempt := 0
	for {
		var retry <-chan time.Time
		var timer *time.Timer
		if e.needsExchange() {
			if err := e.exchange(ctx); err != nil && ctx.Err() == nil {
				delay := backoff.Delay(attempt, rand.Float64())
				attempt++
				e.log.Warn("exchange failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				timer = time.NewTimer(delay)
				retry = timer.C
			} else {
				attempt = 0
			}
		}
		select {
		case <-ctx.Done():
		case <-e.kick:
		case <-retry:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// needsExchange reports whether the sandkey token is missing, refused or
// expired.
func (e *exchangeSource) needsExchange() bool {
	cur := e.Current()
	return cur == nil || e.rejected.Load() || !e.now().Before(cur.ExpiresAt())
}

// exchange presents the newest projected token and takes the answer.
func (e *exchangeSource) exchange(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.needsExchange() {
		return nil // another caller just did it
	}
	raw, err := tokendir.ReadToken(e.dir)
	if err != nil {
		return fmt.Errorf("read the projected ServiceAccount token: %w", err)
	}
	projected := strings.TrimSpace(string(raw))
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	token, jwks, err := e.client.Exchange(ctx, projected)
	if err != nil {
		return err
	}
	if err := e.Source.Offer(token, jwks, session.OriginExchange); err != nil {
		return fmt.Errorf("token from the exchange: %w", err)
	}
	e.rejected.Store(false)
	tok := e.Current()
	iat, exp := projectedTimes(projected)
	e.log.Info("exchanged the projected ServiceAccount token", zap.Uint64("gen", tok.Gen()), zap.String("jti", tok.JTI()),
		zap.Time("projected_iat", iat), zap.Time("projected_exp", exp))
	return nil
}

// watchProjected calls projectedChanged whenever the kubelet may have
// renewed the projected token: on the shared inotify watch of its
// directory (the kubelet's ..data swap), and on a poll, short while the
// directory is not watched.
func (e *exchangeSource) watchProjected(ctx context.Context, watcher *dirwatch.Watcher, interval time.Duration) {
	if watcher == nil {
		watcher = dirwatch.New(e.log)
		defer watcher.Close()
	}
	if interval <= 0 {
		interval = source.LocalPollInterval
	}
	w := watcher.Watch(e.dir, func(name string) bool { return name == "..data" || name == tokendir.TokenFile })
	defer w.Close()
	for {
		next := interval
		if !w.Active() {
			next = min(interval, source.DefaultUnwatchedPollInterval)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.C():
		case <-t.C:
		}
		t.Stop()
		e.projectedChanged()
	}
}

// projectedChanged runs when the kubelet may have written a new projected
// token: it notes a renewal and, when the sandkey token needs it,
// exchanges at once.
func (e *exchangeSource) projectedChanged() {
	if raw, err := tokendir.ReadToken(e.dir); err == nil {
		iat, exp := projectedTimes(strings.TrimSpace(string(raw)))
		if prev := e.lastIAT.Swap(iat.Unix()); prev != iat.Unix() {
			e.log.Info("projected ServiceAccount token renewed", zap.Time("iat", iat), zap.Time("exp", exp))
		}
	}
	if e.needsExchange() {
		e.wake()
	}
}

func (e *exchangeSource) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// projectedTimes reads iat and exp of a projected token, for logs only:
// the gateway's TokenReview is what trusts it.
func projectedTimes(raw string) (iat, exp time.Time) {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return time.Time{}, time.Time{}
	}
	if c.IssuedAt != nil {
		iat = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Time
	}
	return iat, exp
}

// MarkRejected implements session.TokenSource: the gateway refused the
// token, so exchange again now.
func (e *exchangeSource) MarkRejected() {
	e.rejected.Store(true)
	e.Source.MarkRejected()
	e.wake()
}

// PerRPCCredentials implements session.TokenSource: before a call carries
// a token that is refused or expired, it exchanges for a new one.
func (e *exchangeSource) PerRPCCredentials() credentials.PerRPCCredentials { return exchangeBearer{e} }

type exchangeBearer struct{ e *exchangeSource }

func (b exchangeBearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if b.e.needsExchange() {
		if err := b.e.exchange(ctx); err != nil {
			b.e.log.Info("exchange before a call failed; the call carries the current token", zap.Error(err))
		}
	}
	tok := b.e.Current()
	if tok == nil {
		return nil, status.Error(codes.Unauthenticated, "no token yet: the exchange has not succeeded")
	}
	return map[string]string{"authorization": "Bearer " + tok.Raw()}, nil
}

func (exchangeBearer) RequireTransportSecurity() bool { return false }

// Subscribe implements tokenSource.
func (e *exchangeSource) Subscribe() (<-chan *auth.Token, func()) { return e.Source.Subscribe() }

// Close stops watching and exchanging, and closes the source.
func (e *exchangeSource) Close() error {
	e.close.Do(func() {
		e.cancel()
		e.wg.Wait()
		e.client.Close()
		e.Source.Close()
	})
	return nil
}
