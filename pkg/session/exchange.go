package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// The exchange (DESIGN.md §8.1): a sandbox whose backend gives it a
// credential of its own (a Kubernetes pod's projected ServiceAccount
// token) trades it for an ordinary sandkey token. The session server only
// carries the call: it refuses it on attested sockets and oversized
// credentials, and counts every outcome; the Exchanger (the gateway, which
// asks the sandbox's driver) decides.

// MaxExchangeCredential is the largest credential the exchange reads;
// anything longer is refused before any check reaches a backend. A
// projected ServiceAccount token is about 1 KiB.
const MaxExchangeCredential = 16 << 10

// Results of the exchange, the values of sandkey_exchange_total's result
// label. Every refusal names the first check that failed.
const (
	ExchangeOK = "ok"
	// Refused by the session server.
	ExchangeAttested  = "attested_channel" // asked on a per-sandbox socket
	ExchangeTooLarge  = "too_large"        // credential over MaxExchangeCredential
	ExchangeMalformed = "malformed"        // empty sandbox id or credential
	// Refused by the gateway.
	ExchangeUnknownSandbox = "unknown_sandbox"
	ExchangeNotRunning     = "not_running"     // the sandbox is not running
	ExchangeNotSupported   = "not_supported"   // its driver has no credential of its own
	ExchangeNotCurrentRun  = "not_current_run" // bound to a run other than the recorded one
	// Refused by the backend's checks (Kubernetes: TokenReview, then the live pod).
	ExchangeNotAuthenticated = "not_authenticated" // TokenReview said no (garbage, bad signature, revoked)
	ExchangeExpired          = "expired"           // TokenReview said no to an expired token
	ExchangeWrongAudience    = "wrong_audience"
	ExchangeWrongAccount     = "wrong_service_account"
	ExchangeNotBound         = "not_pod_bound" // not exactly one pod name and pod uid
	ExchangePodGone          = "pod_gone"      // the bound pod no longer exists
	ExchangePodUID           = "pod_uid_mismatch"
	// The backend could not be asked (API server unreachable): nothing is
	// decided, the caller retries.
	ExchangeUnavailable = "unavailable"
	// Minting failed in the gateway.
	ExchangeInternal = "internal"
)

// ExchangeResults lists every result, so that each is exported at 0.
var ExchangeResults = []string{
	ExchangeOK, ExchangeAttested, ExchangeTooLarge, ExchangeMalformed,
	ExchangeUnknownSandbox, ExchangeNotRunning, ExchangeNotSupported, ExchangeNotCurrentRun,
	ExchangeNotAuthenticated, ExchangeExpired, ExchangeWrongAudience, ExchangeWrongAccount, ExchangeNotBound,
	ExchangePodGone, ExchangePodUID, ExchangeUnavailable, ExchangeInternal,
}

// ExchangeRefusal is a refused exchange: Reason is one of the Exchange*
// results above.
type ExchangeRefusal struct {
	Reason string
	Err    error
}

// RefuseExchange returns a refusal for reason.
func RefuseExchange(reason, format string, args ...any) error {
	return &ExchangeRefusal{Reason: reason, Err: fmt.Errorf(format, args...)}
}

func (r *ExchangeRefusal) Error() string {
	return "exchange refused (" + r.Reason + "): " + r.Err.Error()
}
func (r *ExchangeRefusal) Unwrap() error { return r.Err }

// ErrExchangeUnavailable means the exchange could not decide (its backend
// is unreachable): retry later; nothing was minted.
var ErrExchangeUnavailable = errors.New("exchange backend unavailable")

// Exchanger trades a sandbox's backend credential for its sandkey token.
type Exchanger interface {
	// Exchange checks credential for sandboxID and returns the sandbox's
	// current token, minting one when needed. Refusals are
	// *ExchangeRefusal; an unreachable backend wraps ErrExchangeUnavailable.
	Exchange(ctx context.Context, sandboxID, credential string) (*auth.Token, error)
}

// exchangeReason is the metric label of an Exchange error.
func exchangeReason(err error) string {
	var r *ExchangeRefusal
	switch {
	case err == nil:
		return ExchangeOK
	case errors.As(err, &r):
		return r.Reason
	case errors.Is(err, ErrExchangeUnavailable):
		return ExchangeUnavailable
	}
	return ExchangeInternal
}

func exchangeCode(reason string) codes.Code {
	switch reason {
	case ExchangeAttested:
		return codes.FailedPrecondition
	case ExchangeTooLarge, ExchangeMalformed:
		return codes.InvalidArgument
	case ExchangeUnknownSandbox:
		return codes.NotFound
	case ExchangeNotRunning, ExchangeNotSupported:
		return codes.FailedPrecondition
	case ExchangeUnavailable:
		return codes.Unavailable
	case ExchangeInternal:
		return codes.Internal
	}
	return codes.Unauthenticated
}

func newExchangeMetric() *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "sandkey", Name: "exchange_total",
		Help: "Credential exchanges (auth mode k8s-sa), by result: ok, or the first check that refused.",
	}, []string{"result"})
	for _, r := range ExchangeResults {
		m.WithLabelValues(r)
	}
	return m
}

// ExchangeServiceAccountToken implements sessionpb.SupervisorSessionServer.
func (s *Server) ExchangeServiceAccountToken(ctx context.Context, req *sessionpb.ExchangeRequest) (*sessionpb.ExchangeResponse, error) {
	tok, err := s.exchange(ctx, req)
	reason := exchangeReason(err)
	s.metrics.exchanges.WithLabelValues(reason).Inc()
	if err != nil {
		s.log.Info("exchange refused", zap.String("sandbox", req.GetSandboxId()), zap.String("reason", reason), zap.Error(err))
		return nil, status.Error(exchangeCode(reason), err.Error())
	}
	s.log.Info("exchange", zap.String("sandbox", tok.SandboxID()), zap.Uint64("gen", tok.Gen()), zap.String("jti", tok.JTI()))
	return &sessionpb.ExchangeResponse{Token: tok.Raw(), Gen: tok.Gen(), Jwks: s.cfg.Authority.JWKS()}, nil
}

func (s *Server) exchange(ctx context.Context, req *sessionpb.ExchangeRequest) (*auth.Token, error) {
	if _, attested := AttestedSandbox(ctx); attested {
		return nil, RefuseExchange(ExchangeAttested, "the exchange is served on the shared listener only")
	}
	cred := req.GetServiceAccountToken()
	switch {
	case len(cred) > MaxExchangeCredential:
		return nil, RefuseExchange(ExchangeTooLarge, "credential of %d bytes, over the %d-byte limit", len(cred), MaxExchangeCredential)
	case cred == "" || req.GetSandboxId() == "" || len(req.GetSandboxId()) > maxHelloField:
		return nil, RefuseExchange(ExchangeMalformed, "want a sandbox id and a credential")
	case s.cfg.Exchanger == nil:
		return nil, RefuseExchange(ExchangeNotSupported, "this gateway exchanges no credential")
	}
	return s.cfg.Exchanger.Exchange(ctx, req.GetSandboxId(), cred)
}

// ExchangeClient asks a gateway's shared listener for exchanges. It needs
// no token of its own: the credential it presents is the proof.
type ExchangeClient struct {
	conn      *grpc.ClientConn
	rpc       sessionpb.SupervisorSessionClient
	sandboxID string
}

// NewExchangeClient prepares a connection to target (made lazily).
func NewExchangeClient(target, sandboxID string, opts ...DialOption) (*ExchangeClient, error) {
	conn, err := Dial(context.Background(), target, opts...)
	if err != nil {
		return nil, fmt.Errorf("exchange client for %s: %w", sandboxID, err)
	}
	return &ExchangeClient{conn: conn, rpc: sessionpb.NewSupervisorSessionClient(conn), sandboxID: sandboxID}, nil
}

// Exchange presents credential and returns the sandkey token and the
// gateway's JWKS.
func (c *ExchangeClient) Exchange(ctx context.Context, credential string) (token string, jwks []byte, err error) {
	// An exchange is asked for when it is needed now: a connection still in
	// gRPC's own backoff (up to DefaultBackoffMax) would fail it unasked.
	c.conn.ResetConnectBackoff()
	resp, err := c.rpc.ExchangeServiceAccountToken(ctx, &sessionpb.ExchangeRequest{
		SandboxId: c.sandboxID, ServiceAccountToken: credential})
	if err != nil {
		return "", nil, fmt.Errorf("exchange credential of sandbox %s: %w", c.sandboxID, err)
	}
	return resp.GetToken(), resp.GetJwks(), nil
}

// Close closes the connection.
func (c *ExchangeClient) Close() error { return c.conn.Close() }

// OriginExchange labels tokens a supervisor got from the exchange.
const OriginExchange = "exchange"
