package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Transport schemes a supervisor can dial (DESIGN.md §7).
const (
	SchemeUnix  = "unix"  // unix:///path: the per-sandbox socket, attested by the gateway
	SchemeVsock = "vsock" // vsock://CID:PORT: libkrun maps it to the per-sandbox socket
	SchemeTCP   = "tcp"   // tcp://host:port: a QEMU forward, or a shared listener
	SchemeTLS   = "tls"   // tls://host:port: a shared listener over TLS
)

// Target is a parsed dial target.
type Target struct {
	Scheme string
	Path   string // unix: the socket path
	CID    uint32 // vsock: the context id
	Port   uint32 // vsock: the port
	Addr   string // tcp and tls: host:port
}

// String returns the target in the form ParseTarget reads.
func (t Target) String() string {
	switch t.Scheme {
	case SchemeUnix:
		return "unix://" + t.Path
	case SchemeVsock:
		return fmt.Sprintf("vsock://%d:%d", t.CID, t.Port)
	default:
		return t.Scheme + "://" + t.Addr
	}
}

// ParseTarget parses unix:///path, vsock://CID:PORT, tcp://host:port and
// tls://host:port.
func ParseTarget(target string) (Target, error) {
	u, err := url.Parse(target)
	if err != nil {
		return Target{}, fmt.Errorf("parse target %q: %w", target, err)
	}
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("parse target %q: %s", target, fmt.Sprintf(format, args...))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return bad("user info, query and fragment are not allowed")
	}
	switch u.Scheme {
	case SchemeUnix:
		if u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return bad("want unix:///absolute/path")
		}
		return Target{Scheme: SchemeUnix, Path: u.Path}, nil
	case SchemeVsock:
		if u.Path != "" || u.Opaque != "" {
			return bad("want vsock://CID:PORT")
		}
		cid, err := strconv.ParseUint(u.Hostname(), 10, 32)
		if err != nil {
			return bad("context id %q is not a 32-bit number", u.Hostname())
		}
		port, err := strconv.ParseUint(u.Port(), 10, 32)
		if err != nil {
			return bad("port %q is not a 32-bit number", u.Port())
		}
		return Target{Scheme: SchemeVsock, CID: uint32(cid), Port: uint32(port)}, nil
	case SchemeTCP, SchemeTLS:
		if u.Path != "" || u.Opaque != "" {
			return bad("want %s://host:port", u.Scheme)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			return bad("want %s://host:port", u.Scheme)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return bad("port %q is not a number between 1 and 65535", port)
		}
		return Target{Scheme: u.Scheme, Addr: u.Host}, nil
	case "":
		return bad("no scheme; want unix://, vsock://, tcp:// or tls://")
	default:
		return bad("unknown scheme %q; want unix, vsock, tcp or tls", u.Scheme)
	}
}

// DialOption configures Dial.
type DialOption func(*dialOptions)

type dialOptions struct {
	tls        *tls.Config
	grpc       []grpc.DialOption
	beforeDial func() uint64       // called before every dial; numbers it
	afterDial  func(uint64, error) // called with every dial's number and outcome
}

// withDialObserver has before called before every dial and after with its
// outcome, so that the client knows what its connection's dials found.
func withDialObserver(before func() uint64, after func(uint64, error)) DialOption {
	return func(o *dialOptions) { o.beforeDial, o.afterDial = before, after }
}

// WithTLSConfig sets the TLS configuration for tls:// targets.
func WithTLSConfig(cfg *tls.Config) DialOption {
	return func(o *dialOptions) { o.tls = cfg }
}

// WithGRPCOptions adds gRPC dial options (per-RPC credentials, interceptors).
func WithGRPCOptions(opts ...grpc.DialOption) DialOption {
	return func(o *dialOptions) { o.grpc = append(o.grpc, opts...) }
}

// Dial returns a client connection to target. The connection is made
// lazily by the first call, so ctx only aborts Dial itself; a target that
// does not parse fails here, naming the target.
func Dial(ctx context.Context, target string, opts ...DialOption) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	t, err := ParseTarget(target)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	creds, err := clientCredentials(t, o.tls)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(observed(dialer(t), o.beforeDial, o.afterDial)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true,
		}),
		// The session has its own backoff; keep the transport's from
		// waiting longer than the session's maximum between attempts.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: DefaultBackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: DefaultBackoffMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	dopts = append(dopts, o.grpc...)
	// passthrough: the address is ours to dial, not a name to resolve. The
	// name becomes the :authority and the TLS server name: host:port for
	// tcp and tls, "localhost" for local sockets (as gRPC's unix scheme).
	name := "localhost"
	if t.Scheme == SchemeTCP || t.Scheme == SchemeTLS {
		name = t.Addr
	}
	conn, err := grpc.NewClient("passthrough:///"+name, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}

func dialer(t Target) func(ctx context.Context, _ string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		switch t.Scheme {
		case SchemeUnix:
			return d.DialContext(ctx, "unix", t.Path)
		case SchemeVsock:
			return vsock.DialContext(ctx, t.CID, t.Port, nil)
		default:
			return d.DialContext(ctx, "tcp", t.Addr)
		}
	}
}

// observed calls before and after around every dial, when they are set.
func observed(dial func(context.Context, string) (net.Conn, error), before func() uint64, after func(uint64, error)) func(context.Context, string) (net.Conn, error) {
	if before == nil || after == nil {
		return dial
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		seq := before()
		conn, err := dial(ctx, addr)
		after(seq, err)
		return conn, err
	}
}

func clientCredentials(t Target, cfg *tls.Config) (credentials.TransportCredentials, error) {
	switch t.Scheme {
	case SchemeTLS:
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return credentials.NewTLS(cfg), nil
	case SchemeUnix, SchemeVsock:
		if cfg != nil {
			return nil, errors.New("a TLS configuration needs a tls:// target")
		}
		// A unix or vsock socket is a kernel channel between two ends on
		// this host (or this VM and its host): nobody else can read it.
		return plainCredentials{level: credentials.PrivacyAndIntegrity}, nil
	default:
		if cfg != nil {
			return nil, errors.New("a TLS configuration needs a tls:// target")
		}
		return plainCredentials{level: credentials.NoSecurity}, nil
	}
}

// plainCredentials is a transport without a handshake that reports how
// private the underlying channel is.
type plainCredentials struct{ level credentials.SecurityLevel }

func (c plainCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, plainInfo{credentials.CommonAuthInfo{SecurityLevel: c.level}}, nil
}

func (c plainCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, plainInfo{credentials.CommonAuthInfo{SecurityLevel: c.level}}, nil
}

func (c plainCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "sandkey-plain"}
}

func (c plainCredentials) Clone() credentials.TransportCredentials { return c }

func (c plainCredentials) OverrideServerName(string) error { return nil }

type plainInfo struct{ credentials.CommonAuthInfo }

func (plainInfo) AuthType() string { return "sandkey-plain" }
