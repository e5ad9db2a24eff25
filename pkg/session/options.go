package session

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
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
// serve sessions: message size limits, keepalive enforcement and the
// transport credentials that mark connections from per-sandbox sockets as
// attested. shared secures the shared (not attested) listeners: nil means
// plaintext, or pass credentials.NewTLS(cfg).
func ServerOptions(shared credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(ServerCredentials(shared)),
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
