package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

const (
	// DefaultHeartbeatInterval is how often both sides send a Heartbeat.
	DefaultHeartbeatInterval = 10 * time.Second
	// DefaultHelloTimeout is how long the gateway waits for the Hello.
	DefaultHelloTimeout = 5 * time.Second
	// missedHeartbeats is how many intervals without a message from the
	// peer end a session, on either side.
	missedHeartbeats = 3
	// resendAfter is how many intervals an unacknowledged push waits
	// before it is sent again.
	resendAfter = 2
	// maxHelloField caps the Hello's string fields, which end up in logs.
	maxHelloField = 256

	// SandboxIDMetadata is the metadata key naming the caller's sandbox on
	// every call; on the shared listener the bearer is checked against it.
	SandboxIDMetadata = "sandkey-sandbox-id"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Authority         Authority
	HeartbeatInterval time.Duration    // DefaultHeartbeatInterval when zero
	HelloTimeout      time.Duration    // DefaultHelloTimeout when zero
	Now               func() time.Time // decides when a credential expired; time.Now when nil
	// Clock times heartbeats, silences, stalled sends and resends;
	// RealClock when nil.
	Clock      Clock
	Logger     *zap.Logger // zap.NewNop() when nil
	Registerer prometheus.Registerer
	// OnExit is called, in the RPC's goroutine, for each ReportExit.
	OnExit func(ExitReport)
	// Exchanger serves ExchangeServiceAccountToken; nil refuses it.
	Exchanger Exchanger
	// OnRegister and OnUnregister, when set, are called with the sandbox
	// id after a session of it is registered, and after the registered
	// session of it ends (not a replaced one), outside the server's lock.
	// Gateway replicas record there who holds each session.
	OnRegister, OnUnregister func(sandboxID string)
}

// ExitReport is a workload's end, as reported by its supervisor.
type ExitReport struct {
	SandboxID  string
	InstanceID string
	Code       int
	Signal     int
}

// Server is the gateway side of the session protocol. It implements
// sessionpb.SupervisorSessionServer and keeps a registry of the one live
// session per sandbox.
type Server struct {
	sessionpb.UnimplementedSupervisorSessionServer

	cfg     ServerConfig
	log     *zap.Logger
	metrics *serverMetrics
	quit    chan struct{} // closed by Close
	// quitCtx is cancelled by Close, for what waits in a call (a Hello).
	quitCtx    context.Context
	cancelQuit context.CancelFunc

	// ticks ends the heartbeat ticker, which runs while there are
	// sessions (heartbeats); nil when it does not run.
	ticks chan struct{}

	// wg counts Connect handlers, their sessions' pumps and the heartbeat
	// ticker.
	wg sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*gwSession   // by sandbox id
	execs    map[string]*pendingExec // by exec id
	closed   bool
}

// NewServer returns a Server; register it on a gRPC server with Register.
// It panics without an Authority, a programming error.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Authority == nil {
		panic("session.NewServer: ServerConfig.Authority is nil")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	quitCtx, cancelQuit := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		metrics:    newServerMetrics(cfg.Registerer),
		quit:       make(chan struct{}),
		quitCtx:    quitCtx,
		cancelQuit: cancelQuit,
		sessions:   map[string]*gwSession{},
		execs:      map[string]*pendingExec{},
	}
}

// Register registers the session service on g.
func (s *Server) Register(g *grpc.Server) { sessionpb.RegisterSupervisorSessionServer(g, s) }

// Push tells the server that sandboxID has a new generation. A connected
// session fetches the latest token and sends it; without a session nothing
// happens here: the next Hello delivers it.
func (s *Server) Push(sandboxID string) {
	s.mu.Lock()
	sess := s.sessions[sandboxID]
	s.mu.Unlock()
	if sess != nil {
		sess.notifyPush()
	}
}

// Connected reports whether sandboxID has a session.
func (s *Server) Connected(sandboxID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[sandboxID] != nil
}

// Sessions returns how many sessions are established.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// SandboxIDs lists the sandboxes that have a session, in no particular
// order.
func (s *Server) SandboxIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	return ids
}

// Disconnect ends sandboxID's session, if any; the supervisor will
// reconnect.
func (s *Server) Disconnect(sandboxID string) {
	s.endSession(sandboxID, sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "session ended by the gateway")
}

// EndDeleted ends the session of a sandbox that was deleted, telling its
// supervisor so (REJECT_CODE_UNKNOWN_SANDBOX): it then has no gateway to
// report its workload's exit to, and need not wait trying.
func (s *Server) EndDeleted(sandboxID string) {
	s.endSession(sandboxID, sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX, "sandbox deleted")
}

// endSession ends sandboxID's session, if any, with code and reason.
func (s *Server) endSession(sandboxID string, code sessionpb.RejectCode, reason string) {
	s.mu.Lock()
	sess := s.sessions[sandboxID]
	s.mu.Unlock()
	if sess != nil {
		sess.end(code, reason)
	}
}

// Close ends every session, fails pending execs, refuses new sessions and
// waits for the session goroutines to stop. A session whose supervisor
// stopped reading ends only once its send has been stalled for three
// heartbeat intervals, so stop the gRPC server concurrently with Close if
// shutdown must be faster.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
		s.cancelQuit()
	}
	sessions := make([]*gwSession, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	execs := make([]*pendingExec, 0, len(s.execs))
	for _, pe := range s.execs {
		execs = append(execs, pe)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.end(sessionpb.RejectCode_REJECT_CODE_DISCONNECTED, "gateway is shutting down")
	}
	for _, pe := range execs {
		pe.finish(ExecResult{}, ErrServerClosed)
	}
	s.wg.Wait()
}

// enter counts a new Connect handler unless the server is closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// register makes sess the session of its sandbox, ending the one it
// replaces.
func (s *Server) register(sess *gwSession) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	old := s.sessions[sess.sandboxID]
	s.sessions[sess.sandboxID] = sess
	s.metrics.sessions.Set(float64(len(s.sessions)))
	s.startHeartbeatsLocked()
	s.mu.Unlock()
	s.metrics.accepted.Inc()
	if s.cfg.OnRegister != nil {
		s.cfg.OnRegister(sess.sandboxID)
	}
	if old != nil {
		old.end(sessionpb.RejectCode_REJECT_CODE_SESSION_REPLACED,
			fmt.Sprintf("session %s of sandbox %s replaced this one", sess.id, sess.sandboxID))
	}
	return true
}

// unregister removes sess, and only sess: a late-ending old session never
// removes the session that replaced it.
func (s *Server) unregister(sess *gwSession) {
	s.mu.Lock()
	removed := s.sessions[sess.sandboxID] == sess
	if removed {
		delete(s.sessions, sess.sandboxID)
	}
	s.metrics.sessions.Set(float64(len(s.sessions)))
	s.stopHeartbeatsLocked()
	s.mu.Unlock()
	close(sess.done)
	if removed && s.cfg.OnUnregister != nil {
		s.cfg.OnUnregister(sess.sandboxID)
	}
}

// credential is what the caller of an RPC proved.
type credential struct {
	attested bool
	bearer   bool // a bearer token was presented
	// presented is the verified bearer token, nil if there was none or it
	// was superseded or not issued (tolerated on attested channels only).
	presented *auth.Token
	// unissued is a bearer signed for the attested sandbox that the
	// authority never issued (a store restored from backup): the answer
	// must be a generation above it.
	unissued *auth.Token
}

// authenticate checks the call's credential for sandboxID (the Hello's,
// or the call's metadata). On an attested channel the socket is the
// identity: sandboxID must be the socket's sandbox, and a bearer, if any,
// must be a genuine token of that sandbox, but may be expired, superseded
// or unknown to the store. Elsewhere only a valid, issued bearer of one of
// the two newest generations is accepted. The error is a *rejection, or a
// gRPC status when the gateway cannot authenticate at all (its store
// failed).
func (s *Server) authenticate(ctx context.Context, sandboxID string) (credential, error) {
	var cred credential
	attestedID, attested := AttestedSandbox(ctx)
	raw, hasBearer, err := bearerFromContext(ctx)
	if err != nil {
		return cred, reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, err.Error())
	}
	cred.bearer = hasBearer
	if attested {
		cred.attested = true
		if sandboxID != attestedID {
			return cred, reject(sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO,
				fmt.Sprintf("sandbox %q on the socket of sandbox %q", sandboxID, attestedID))
		}
		if !hasBearer {
			return cred, nil
		}
		tok, err := s.cfg.Authority.Authenticate(ctx, raw, sandboxID, true)
		var notIssued *NotIssuedError
		switch {
		case err == nil:
			cred.presented = tok
			return cred, nil
		case errors.Is(err, ErrSuperseded):
			// The socket proves who calls; an old generation only means
			// the supervisor missed rotations. It gets the latest.
			return cred, nil
		case errors.As(err, &notIssued):
			// Signed for this sandbox, but the store forgot it (restored
			// from backup): treated like an expired token, and answered
			// with a generation above it.
			cred.unissued = notIssued.Token
			return cred, nil
		default:
			return cred, authRejection(err)
		}
	}
	if !hasBearer {
		return cred, reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED,
			"no bearer token (authorization metadata) on a shared listener")
	}
	tok, err := s.cfg.Authority.Authenticate(ctx, raw, sandboxID, false)
	if err != nil {
		return cred, authRejection(err)
	}
	if !s.cfg.Now().Before(tok.ExpiresAt()) {
		// Within the verifier's leeway, but a session must not start on
		// a credential that has already expired.
		return cred, reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, fmt.Sprintf("token %s has expired", tok))
	}
	cred.presented = tok
	return cred, nil
}

func authRejection(err error) error {
	switch {
	case errors.Is(err, ErrUnknownSandbox):
		return reject(sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX, err.Error())
	case errors.Is(err, ErrSuperseded):
		return reject(sessionpb.RejectCode_REJECT_CODE_SUPERSEDED, err.Error())
	case isCallerFault(err):
		return reject(sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, err.Error())
	default:
		return status.Errorf(codes.Unavailable, "gateway cannot authenticate now: %v", err)
	}
}

// rejection is a refusal that the Connect stream reports as Rejected and
// other calls as a gRPC status.
type rejection struct {
	code   sessionpb.RejectCode
	reason string
}

func reject(code sessionpb.RejectCode, reason string) error {
	return &rejection{code: code, reason: reason}
}

func (r *rejection) Error() string { return codeLabel(r.code) + ": " + r.reason }

// GRPCStatus lets status.FromError and status.Code read a rejection.
func (r *rejection) GRPCStatus() *status.Status { return status.New(grpcCode(r.code), r.Error()) }

func grpcCode(c sessionpb.RejectCode) codes.Code {
	switch c {
	case sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX:
		return codes.NotFound
	case sessionpb.RejectCode_REJECT_CODE_SUPERSEDED, sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED:
		return codes.Unauthenticated
	case sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO:
		return codes.InvalidArgument
	case sessionpb.RejectCode_REJECT_CODE_SESSION_REPLACED:
		return codes.Aborted
	case sessionpb.RejectCode_REJECT_CODE_HEARTBEAT_TIMEOUT:
		return codes.DeadlineExceeded
	case sessionpb.RejectCode_REJECT_CODE_DISCONNECTED:
		return codes.Unavailable
	default:
		return codes.Unknown
	}
}

// bearerFromContext returns the call's bearer token, if any.
func bearerFromContext(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, errors.New("more than one authorization header")
	}
	scheme, raw, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(raw) == "" {
		return "", false, errors.New("authorization header is not \"Bearer <token>\"")
	}
	return strings.TrimSpace(raw), true, nil
}

// claimedSandbox returns the sandbox the call's metadata names, if any.
func claimedSandbox(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(SandboxIDMetadata); len(v) == 1 {
		return v[0]
	}
	return ""
}

// authenticateCall authenticates a call other than Connect and returns
// its sandbox: the attested one, or the one its metadata names and its
// bearer proves.
func (s *Server) authenticateCall(ctx context.Context) (string, error) {
	sandboxID := claimedSandbox(ctx)
	if id, ok := AttestedSandbox(ctx); ok {
		if sandboxID != "" && sandboxID != id {
			return "", status.Errorf(codes.PermissionDenied, "call for sandbox %q on the socket of sandbox %q", sandboxID, id)
		}
		sandboxID = id
	} else if sandboxID == "" {
		return "", status.Errorf(codes.Unauthenticated, "no %s metadata on a shared listener", SandboxIDMetadata)
	}
	if _, err := s.authenticate(ctx, sandboxID); err != nil {
		return "", toStatus(err)
	}
	return sandboxID, nil
}

func toStatus(err error) error {
	var r *rejection
	if errors.As(err, &r) {
		code := grpcCode(r.code)
		if r.code == sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO || r.code == sessionpb.RejectCode_REJECT_CODE_UNKNOWN_SANDBOX {
			code = codes.PermissionDenied
		}
		return status.Error(code, r.Error())
	}
	return err
}

// idBytes is the size of a session's and a pending exec's random id.
const idBytes = 16

// ReportExit implements sessionpb.SupervisorSessionServer.
func (s *Server) ReportExit(ctx context.Context, req *sessionpb.ReportExitRequest) (*sessionpb.ReportExitResponse, error) {
	sandboxID, err := s.authenticateCall(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetSandboxId() != "" && req.GetSandboxId() != sandboxID {
		return nil, status.Errorf(codes.PermissionDenied, "exit report for sandbox %q from sandbox %q", req.GetSandboxId(), sandboxID)
	}
	s.log.Info("workload exited", zap.String("sandbox", sandboxID), zap.String("instance", req.GetInstanceId()),
		zap.Int32("code", req.GetExitCode()), zap.Int32("signal", req.GetSignal()))
	if s.cfg.OnExit != nil {
		s.cfg.OnExit(ExitReport{SandboxID: sandboxID, InstanceID: req.GetInstanceId(),
			Code: int(req.GetExitCode()), Signal: int(req.GetSignal())})
	}
	return &sessionpb.ReportExitResponse{}, nil
}
