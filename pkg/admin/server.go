package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/session"
)

// Server serves the operator API from a gateway.
type Server struct {
	adminpb.UnimplementedAdminServer
	g   *gateway.Gateway
	log *zap.Logger
	// holders says which replica holds a session: the gateway unless an
	// option says otherwise; nil only without a gateway.
	holders Holders
	// peers reaches the other replicas; nil when this gateway cannot
	// call them.
	peers *Peers
}

// NewServer returns the operator API of g. A nil log discards.
func NewServer(g *gateway.Gateway, log *zap.Logger, opts ...Option) adminpb.AdminServer {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{g: g, log: log}
	if g != nil {
		s.holders = g
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// fail turns err into a status for the caller, logging what is the
// gateway's fault rather than the caller's.
func (s *Server) fail(op, sandbox string, err error) error {
	st := toStatus(err, sandbox)
	if status.Code(st) == codes.Internal {
		s.log.Error("operator API call failed", zap.String("op", op), zap.String("sandbox", sandbox), zap.Error(err))
	}
	return st
}

func requireSandbox(ref string) error {
	if strings.TrimSpace(ref) == "" {
		return invalidf("no sandbox given: name it by id or name")
	}
	return nil
}

// CreateSandbox implements adminpb.AdminServer.
func (s *Server) CreateSandbox(ctx context.Context, req *adminpb.CreateSandboxRequest) (*adminpb.Sandbox, error) {
	if strings.TrimSpace(req.GetName()) == "" {
		return nil, invalidf("sandbox name is empty")
	}
	// With an image, no command runs the image's own; an empty argv[0]
	// is never a command.
	if cmd := req.GetCommand(); (len(cmd) == 0 && req.GetImage() == "") || (len(cmd) > 0 && cmd[0] == "") {
		return nil, invalidf("sandbox %q: no command to run", req.GetName())
	}
	sb, err := s.g.Create(ctx, gateway.CreateRequest{
		Name:   req.GetName(),
		Driver: req.GetDriver(),
		Spec:   gateway.Spec{Image: req.GetImage(), Command: req.GetCommand(), Env: req.GetEnv()},
		Start:  req.GetStart(),
	})
	if err != nil {
		return nil, s.fail("create", req.GetName(), err)
	}
	return SandboxProto(sb), nil
}

// ListSandboxes implements adminpb.AdminServer.
func (s *Server) ListSandboxes(ctx context.Context, _ *adminpb.ListSandboxesRequest) (*adminpb.ListSandboxesResponse, error) {
	all, err := s.g.List(ctx)
	if err != nil {
		return nil, s.fail("list", "", err)
	}
	resp := &adminpb.ListSandboxesResponse{Sandboxes: make([]*adminpb.Sandbox, 0, len(all))}
	held := map[string]gateway.Holder{}
	if s.holders != nil {
		ids := make([]string, len(all))
		for i, sb := range all {
			ids[i] = sb.ID
		}
		if held, err = s.holders.SessionHolders(ctx, ids); err != nil {
			s.log.Warn("session holders lookup failed", zap.String("op", "list"), zap.Error(err))
			return nil, status.Errorf(codes.Unavailable, "list sandboxes: cannot tell which gateway replicas hold their sessions: %v; retry shortly", err)
		}
	}
	for _, sb := range all {
		p := SandboxProto(sb)
		if h, ok := held[sb.ID]; ok && h.Connected {
			p.Connected, p.ReplicaId = true, h.ReplicaID
		}
		resp.Sandboxes = append(resp.Sandboxes, p)
	}
	return resp, nil
}

// GetSandbox implements adminpb.AdminServer.
func (s *Server) GetSandbox(ctx context.Context, req *adminpb.GetSandboxRequest) (*adminpb.Sandbox, error) {
	return s.sandboxOp(ctx, "get", req.GetSandbox(), s.g.Get)
}

// StartSandbox implements adminpb.AdminServer.
func (s *Server) StartSandbox(ctx context.Context, req *adminpb.StartSandboxRequest) (*adminpb.Sandbox, error) {
	return s.sandboxOp(ctx, "start", req.GetSandbox(), s.g.Start)
}

// StopSandbox implements adminpb.AdminServer.
func (s *Server) StopSandbox(ctx context.Context, req *adminpb.StopSandboxRequest) (*adminpb.Sandbox, error) {
	return s.sandboxOp(ctx, "stop", req.GetSandbox(), s.g.Stop)
}

func (s *Server) sandboxOp(ctx context.Context, op, ref string, do func(context.Context, string) (gateway.Sandbox, error)) (*adminpb.Sandbox, error) {
	if err := requireSandbox(ref); err != nil {
		return nil, err
	}
	sb, err := do(ctx, ref)
	if err != nil {
		return nil, s.fail(op, ref, err)
	}
	return s.sandboxProto(ctx, op, sb)
}

// sandboxProto is SandboxProto(sb) with its session as the replicas see
// it: connected when any replica holds it, and which one.
func (s *Server) sandboxProto(ctx context.Context, op string, sb gateway.Sandbox) (*adminpb.Sandbox, error) {
	p := SandboxProto(sb)
	if s.holders == nil {
		return p, nil
	}
	h, err := s.holder(ctx, op, sb)
	if err != nil {
		return nil, err
	}
	if h.Connected {
		p.Connected, p.ReplicaId = true, h.ReplicaID
	}
	return p, nil
}

// DeleteSandbox implements adminpb.AdminServer.
func (s *Server) DeleteSandbox(ctx context.Context, req *adminpb.DeleteSandboxRequest) (*adminpb.DeleteSandboxResponse, error) {
	if err := requireSandbox(req.GetSandbox()); err != nil {
		return nil, err
	}
	if err := s.g.Delete(ctx, req.GetSandbox()); err != nil {
		return nil, s.fail("delete", req.GetSandbox(), err)
	}
	return &adminpb.DeleteSandboxResponse{}, nil
}

// RotateSandbox implements adminpb.AdminServer.
func (s *Server) RotateSandbox(ctx context.Context, req *adminpb.RotateSandboxRequest) (*adminpb.RotateSandboxResponse, error) {
	if err := requireSandbox(req.GetSandbox()); err != nil {
		return nil, err
	}
	if pc, err := s.peerFor(ctx, "rotate", req.GetSandbox()); err != nil {
		return nil, err
	} else if pc != nil {
		defer pc.release()
		return pc.rotate(req)
	}
	r, err := s.g.RotateReport(ctx, req.GetSandbox())
	if err != nil {
		return nil, s.fail("rotate", req.GetSandbox(), err)
	}
	resp := &adminpb.RotateSandboxResponse{Gen: r.Gen, Written: r.Written, Delivered: r.Delivered}
	if r.WriteErr != nil {
		resp.WriteError = r.WriteErr.Error()
	}
	return resp, nil
}

// ExecSandbox implements adminpb.AdminServer: the command's output goes
// out as it arrives, and its exit is the last message. A timeout, or the
// caller going away, kills the command and ends the call with
// DeadlineExceeded or Canceled.
func (s *Server) ExecSandbox(req *adminpb.ExecSandboxRequest, stream grpc.ServerStreamingServer[adminpb.ExecSandboxResponse]) error {
	ref := req.GetSandbox()
	if err := requireSandbox(ref); err != nil {
		return err
	}
	ereq, timeout, err := execRequest(req)
	if err != nil {
		return err
	}
	if pc, err := s.peerFor(stream.Context(), "exec in", ref); err != nil {
		return err
	} else if pc != nil {
		defer pc.release()
		return pc.execSandbox(req, stream)
	}
	return s.runExec(stream.Context(), ref, ereq, timeout, &execOutput{stream: stream})
}

// runExec runs ereq in sandbox ref, its output and exit sent to out. A
// timeout, or the caller going away (callCtx ending), kills the command.
func (s *Server) runExec(callCtx context.Context, ref string, ereq session.ExecRequest, timeout time.Duration, out *execOutput) error {
	ctx := callCtx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ereq.Stdout = out.writer(func(p []byte) *adminpb.ExecSandboxResponse {
		return &adminpb.ExecSandboxResponse{Data: &adminpb.ExecSandboxResponse_Stdout{Stdout: p}}
	})
	ereq.Stderr = out.writer(func(p []byte) *adminpb.ExecSandboxResponse {
		return &adminpb.ExecSandboxResponse{Data: &adminpb.ExecSandboxResponse_Stderr{Stderr: p}}
	})
	res, err := s.g.Exec(ctx, ref, ereq)
	if err != nil {
		if timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && callCtx.Err() == nil {
			return status.Errorf(codes.DeadlineExceeded, "exec %q in sandbox %q: still running after the %s timeout; it was killed", ereq.Argv[0], ref, timeout)
		}
		return s.fail("exec", ref, err)
	}
	return out.send(&adminpb.ExecSandboxResponse{Data: &adminpb.ExecSandboxResponse_Exit{Exit: &adminpb.ExecExit{
		Code: int32(res.ExitCode), Signal: int32(res.Signal), Error: res.Error,
	}}})
}

// execRequest checks an exec request and translates it for the gateway.
func execRequest(req *adminpb.ExecSandboxRequest) (session.ExecRequest, time.Duration, error) {
	argv := req.GetArgv()
	if len(argv) == 0 || argv[0] == "" {
		return session.ExecRequest{}, 0, invalidf("exec in sandbox %q: no command given", req.GetSandbox())
	}
	for _, kv := range req.GetEnv() {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return session.ExecRequest{}, 0, invalidf("exec in sandbox %q: environment entry %q is not KEY=VALUE", req.GetSandbox(), kv)
		}
	}
	if n := len(req.GetStdin()); n > session.MaxExecStdin {
		return session.ExecRequest{}, 0, invalidf("exec in sandbox %q: stdin of %d bytes exceeds the limit of %d", req.GetSandbox(), n, session.MaxExecStdin)
	}
	var timeout time.Duration
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return session.ExecRequest{}, 0, invalidf("exec in sandbox %q: timeout: %v", req.GetSandbox(), err)
		}
		if timeout = t.AsDuration(); timeout <= 0 {
			return session.ExecRequest{}, 0, invalidf("exec in sandbox %q: timeout %s is not positive", req.GetSandbox(), timeout)
		}
	}
	ereq := session.ExecRequest{Argv: argv, Env: req.GetEnv()}
	if req.GetHasStdin() {
		// A nil Stdin means no input at all; empty input is not nil.
		ereq.Stdin = append([]byte{}, req.GetStdin()...)
	}
	return ereq, timeout, nil
}

// execOutput serialises the sends of an exec's output on its stream:
// stdout and stderr may be written from different goroutines.
type execOutput struct {
	mu     sync.Mutex
	stream interface {
		Send(*adminpb.ExecSandboxResponse) error
	}
}

func (o *execOutput) send(m *adminpb.ExecSandboxResponse) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stream.Send(m)
}

func (o *execOutput) writer(wrap func([]byte) *adminpb.ExecSandboxResponse) writerFunc {
	return func(p []byte) (int, error) {
		if err := o.send(wrap(bytes.Clone(p))); err != nil {
			return 0, fmt.Errorf("send exec output: %w", err)
		}
		return len(p), nil
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ListKeys implements adminpb.AdminServer.
func (s *Server) ListKeys(ctx context.Context, _ *adminpb.ListKeysRequest) (*adminpb.ListKeysResponse, error) {
	keys, err := s.g.ListKeys(ctx)
	if err != nil {
		return nil, s.fail("list keys", "", err)
	}
	resp := &adminpb.ListKeysResponse{Keys: make([]*adminpb.SigningKey, 0, len(keys))}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, KeyProto(k))
	}
	return resp, nil
}

// RotateKeys implements adminpb.AdminServer.
func (s *Server) RotateKeys(ctx context.Context, req *adminpb.RotateKeysRequest) (*adminpb.RotateKeysResponse, error) {
	r, err := s.g.RotateKeys(ctx, req.GetNow())
	if err != nil {
		return nil, s.fail("rotate keys", "", err)
	}
	return &adminpb.RotateKeysResponse{Kid: r.KID, Active: r.Active, ActivatesAt: timestamp(r.ActivateAt)}, nil
}

// SandboxProto is sb as the operator API carries it.
func SandboxProto(sb gateway.Sandbox) *adminpb.Sandbox {
	return &adminpb.Sandbox{
		Id:           sb.ID,
		Name:         sb.Name,
		Driver:       sb.Driver,
		State:        string(sb.State),
		InstanceId:   sb.InstanceID,
		RunId:        sb.RunID,
		LatestGen:    sb.LatestGen,
		WrittenGen:   sb.WrittenGen,
		DeliveredGen: sb.DeliveredGen,
		RotateAt:     timestamp(sb.RotateAt),
		CreatedAt:    timestamp(sb.CreatedAt),
		UpdatedAt:    timestamp(sb.UpdatedAt),
		Connected:    sb.Connected,
		Image:        sb.Spec.Image,
		Command:      sb.Spec.Command,
		Env:          sb.Spec.Env,
	}
}

// KeyProto is k as the operator API carries it: never its private half.
func KeyProto(k gateway.SigningKey) *adminpb.SigningKey {
	return &adminpb.SigningKey{
		Kid:         k.KID,
		State:       string(k.State),
		CreatedAt:   timestamp(k.CreatedAt),
		RetiredAt:   timestamp(k.RetiredAt),
		PublicKey:   k.Public,
		ActivatesAt: timestamp(k.ActivateAt),
	}
}

// timestamp leaves a zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Register serves the operator API of gw (configured by opts) on srv, with the gateway's gRPC
// health service (grpc.health.v1, following its readiness) beside it.
func Register(srv *grpc.Server, gw *gateway.Gateway, log *zap.Logger, opts ...Option) {
	adminpb.RegisterAdminServer(srv, NewServer(gw, log, opts...))
	healthpb.RegisterHealthServer(srv, gw.Health())
}

// RegisterReflection adds server reflection to srv, so that grpcurl and
// friends can call the operator API without its .proto files. Serve it on
// the unix socket only: the socket's mode already limits who asks.
func RegisterReflection(srv *grpc.Server) { reflection.Register(srv) }
