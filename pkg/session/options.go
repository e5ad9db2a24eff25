package session

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/tap"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

const (
	// MaxMessageSize caps every message of the service, both ways: a token
	// is at most 64 KiB, and exec output travels in chunks far smaller.
	MaxMessageSize = 1 << 20
	// MaxExecStdin caps the stdin of one exec, which travels in one
	// ExecRequest and must fit in MaxMessageSize.
	MaxExecStdin = 512 << 10
	// execChunkSize is the largest piece of output one ExecChunk carries.
	execChunkSize = 32 << 10

	// keepaliveTime and keepaliveTimeout detect a dead transport below the
	// session's heartbeats (a peer whose kernel is gone sends no RST).
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// keepaliveMinTime is the most frequent client ping the server
	// tolerates; clients ping every keepaliveTime.
	keepaliveMinTime = 10 * time.Second
)

// ServerOptions returns the options the gateway's gRPC server needs to
// serve sessions: message size limits, keepalive enforcement, the
// transport credentials that mark connections from per-sandbox sockets as
// attested, and the tap that lets a session end its own stream (Connect
// refuses to serve without it; gRPC takes one tap, so install no other).
// shared secures the shared (not attested) listeners: nil means
// plaintext, or pass credentials.NewTLS(cfg).
//
// Connections read without a buffer of their own: every message of the
// service is small, and gRPC's default 32 KiB read buffer, which it only
// pools for bare TCP and unix connections, would otherwise stay with
// every idle connection of a per-sandbox socket or a TLS listener. (Write
// buffers are shared by default.) Supervisors are told not to index their
// headers (an HPACK table of size 0): each sends a handful of calls, and
// every connection's table would otherwise keep a copy of its bearer
// token for as long as it lives.
func ServerOptions(shared credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(ServerCredentials(shared)),
		grpc.InTapHandle(cancellableSessions),
		grpc.ReadBufferSize(0),
		grpc.HeaderTableSize(0),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: keepaliveMinTime, PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: keepaliveTime, Timeout: keepaliveTimeout,
		}),
	}
}

// streamCancelKey keys, in a Connect stream's context, the function that
// cancels that context (see cancellableSessions).
type streamCancelKey struct{}

// cancellableSessions gives every Connect stream a context its session
// can cancel: that ends the handler's Recv and a Send blocked on a
// supervisor that stopped reading, which otherwise only end when the
// handler returns. gRPC runs it in the connection's reader before the
// stream exists, so it must not block.
func cancellableSessions(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != sessionpb.SupervisorSession_Connect_FullMethodName {
		return ctx, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	return context.WithValue(ctx, streamCancelKey{}, cancel), nil
}
