package admin

import (
	"context"
	"errors"
	"io"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/gateway"
)

// ForwardedByKey is the metadata a replica adds to a call it forwards to
// the replica holding the sandbox's session, naming itself. A call that
// carries it is answered where it arrives, never forwarded again, so two
// replicas that disagree about the holder cannot pass a call back and
// forth.
const ForwardedByKey = "sandkey-forwarded-by"

// HolderErrorReason is the reason of the ErrorInfo detail on an error
// about the replica holding a sandbox's session (unreachable, or refusing
// this replica) rather than about the gateway that was called, so that a
// client does not tell its user to fix the call or reach another gateway.
// Its metadata names the replica ("replica") and its address ("addr").
const (
	HolderErrorReason = "SESSION_HOLDER"
	ErrorDomain       = "sandkey.admin"
)

// holderError is a status error with code about the holder of a session.
func holderError(code codes.Code, h gateway.Holder, format string, args ...any) error {
	st := status.Newf(code, format, args...)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: HolderErrorReason, Domain: ErrorDomain,
		Metadata: map[string]string{"replica": h.ReplicaID, "addr": h.AdminAddr}})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// IsHolderError reports whether st is about the replica holding the
// session, not about the gateway that answered.
func IsHolderError(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == HolderErrorReason && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// Holders says which gateway replica holds a sandbox's session.
// *gateway.Gateway is one; tests give another.
type Holders interface {
	SessionHolder(ctx context.Context, sandboxID string) (gateway.Holder, error)
	// SessionHolders answers for many sandboxes with one question, for
	// listings; a sandbox absent from the map has no session anywhere.
	SessionHolders(ctx context.Context, sandboxIDs []string) (map[string]gateway.Holder, error)
	ReplicaID() string
}

// Option configures a Server.
type Option func(*Server)

// WithPeers lets the server forward calls for sessions other replicas
// hold to them, through p. Without it such calls fail as Unavailable.
func WithPeers(p *Peers) Option { return func(s *Server) { s.peers = p } }

// WithHolders replaces the gateway as the answer to "which replica holds
// this session".
func WithHolders(h Holders) Option { return func(s *Server) { s.holders = h } }

// forwarded reports whether the call was forwarded by another replica.
func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(ForwardedByKey)) > 0
}

// peerCall is a call being forwarded to the replica holding the session.
type peerCall struct {
	ref     string // the sandbox as the caller named it
	holder  gateway.Holder
	ctx     context.Context // the caller's, with ForwardedByKey added
	client  adminpb.AdminClient
	release func()
}

// holder says which replica holds the session of sb. A sandbox whose
// session is here needs no lookup.
func (s *Server) holder(ctx context.Context, op string, sb gateway.Sandbox) (gateway.Holder, error) {
	if sb.Connected {
		return gateway.Holder{ReplicaID: s.holders.ReplicaID(), Local: true, Connected: true}, nil
	}
	h, err := s.holders.SessionHolder(ctx, sb.ID)
	if err != nil {
		s.log.Warn("session holder lookup failed", zap.String("op", op), zap.String("sandbox", sb.ID), zap.Error(err))
		return gateway.Holder{}, status.Errorf(codes.Unavailable, "%s sandbox %q: cannot tell which gateway replica holds its session: %v; retry shortly",
			op, sb.Name, err)
	}
	return h, nil
}

// peerFor returns the forwarded call to make for op on sandbox ref when
// another replica holds its session, or nil when this gateway answers:
// it holds the session, none does, or the call was forwarded here.
// Release the returned call when done.
func (s *Server) peerFor(ctx context.Context, op, ref string) (*peerCall, error) {
	if s.holders == nil || forwarded(ctx) {
		return nil, nil
	}
	sb, err := s.g.Get(ctx, ref)
	if err != nil {
		return nil, s.fail(op, ref, err)
	}
	h, err := s.holder(ctx, op, sb)
	if err != nil || h.Local {
		return nil, err
	}
	switch {
	case h.AdminAddr == "":
		return nil, holderError(codes.Unavailable, h,
			"%s sandbox %q: its session is held by gateway replica %s, which advertises no operator API address to forward to (--replica-advertise)",
			op, ref, h.ReplicaID)
	case s.peers == nil:
		return nil, holderError(codes.Unavailable, h,
			"%s sandbox %q: its session is held by gateway replica %s at %s, which this gateway cannot call: it serves no --admin-tcp with a certificate and token",
			op, ref, h.ReplicaID, h.AdminAddr)
	}
	client, release, err := s.peers.acquire(h.AdminAddr)
	if err != nil {
		return nil, holderError(codes.Unavailable, h, "%s sandbox %q: its session is held by gateway replica %s at %s: %v",
			op, ref, h.ReplicaID, h.AdminAddr, err)
	}
	s.log.Debug("forwarding operator call", zap.String("op", op), zap.String("sandbox", sb.ID),
		zap.String("replica", h.ReplicaID), zap.String("addr", h.AdminAddr))
	return &peerCall{
		ref:     ref,
		holder:  h,
		ctx:     metadata.AppendToOutgoingContext(ctx, ForwardedByKey, s.holders.ReplicaID()),
		client:  client,
		release: release,
	}, nil
}

// fail passes the peer's error on with its code. A peer that cannot be
// reached, or that refuses this replica's token, is named with its
// address: the caller cannot fix that by retrying elsewhere, the
// operator of the replicas can.
func (c *peerCall) fail(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return holderError(codes.Unavailable, c.holder, "sandbox %q: its session is held by gateway replica %s, whose operator API at %s is unavailable: %s",
			c.ref, c.holder.ReplicaID, c.holder.AdminAddr, st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return holderError(st.Code(), c.holder, "sandbox %q: gateway replica %s at %s, which holds its session, refused this replica's call: %s (replicas must share one --admin-token-file)",
			c.ref, c.holder.ReplicaID, c.holder.AdminAddr, st.Message())
	}
	return st.Err()
}

// rotate forwards RotateSandbox.
func (c *peerCall) rotate(req *adminpb.RotateSandboxRequest) (*adminpb.RotateSandboxResponse, error) {
	resp, err := c.client.RotateSandbox(c.ctx, req)
	if err != nil {
		return nil, c.fail(err)
	}
	return resp, nil
}

// execSandbox forwards ExecSandbox, the peer's output streaming back as
// it comes.
func (c *peerCall) execSandbox(req *adminpb.ExecSandboxRequest, stream grpc.ServerStreamingServer[adminpb.ExecSandboxResponse]) error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	ps, err := c.client.ExecSandbox(ctx, req)
	if err != nil {
		return c.fail(err)
	}
	return c.relayOutput(ps, stream)
}

// exec forwards the interactive Exec: first (the start) and then every
// input of the caller go to the peer, its output comes back, and the
// caller half-closing half-closes the peer's call.
func (c *peerCall) exec(first *adminpb.ExecInput, stream grpc.BidiStreamingServer[adminpb.ExecInput, adminpb.ExecSandboxResponse]) error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	ps, err := c.client.Exec(ctx)
	if err != nil {
		return c.fail(err)
	}
	// A failed send means the call has ended; Recv below says why.
	if err := ps.Send(first); err == nil {
		// The relay is the only sender on ps. It ends when the caller
		// half-closes or its call ends, which gRPC makes happen once
		// this handler has returned, and with ctx cancelled any pending
		// send to the peer fails.
		go relayInput(stream, ps)
	}
	return c.relayOutput(ps, stream)
}

// relayInput sends the caller's inputs to the peer until the caller
// half-closes (then half-closes the peer's call) or either call ends.
func relayInput(from grpc.BidiStreamingServer[adminpb.ExecInput, adminpb.ExecSandboxResponse], to grpc.BidiStreamingClient[adminpb.ExecInput, adminpb.ExecSandboxResponse]) {
	for {
		m, err := from.Recv()
		if errors.Is(err, io.EOF) {
			to.CloseSend()
			return
		}
		if err != nil {
			return
		}
		if err := to.Send(m); err != nil {
			return
		}
	}
}

// relayOutput sends the peer's exec output to the caller until the
// peer's call ends, passing on how it ended.
func (c *peerCall) relayOutput(from interface {
	Recv() (*adminpb.ExecSandboxResponse, error)
}, to interface {
	Send(*adminpb.ExecSandboxResponse) error
}) error {
	for {
		m, err := from.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.fail(err)
		}
		if err := to.Send(m); err != nil {
			return err
		}
	}
}
