package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// MinAdminTokenLength is the shortest admin token the TCP listener
// accepts: it is the only secret between the network and every sandbox.
const MinAdminTokenLength = 16

// TCPConfig configures the operator API's optional TCP listener.
type TCPConfig struct {
	CertFile string // PEM server certificate (with its chain)
	KeyFile  string // PEM private key of CertFile
	// TokenFile holds the admin bearer token (surrounding whitespace is
	// ignored). It must not be readable by group or others.
	TokenFile string
	Logger    *zap.Logger // logs refused calls; zap.NewNop() when nil
}

// ServerOptions returns the options of a grpc.Server for the operator API
// on TCP: transport credentials that run TLS on every TCP connection, and
// interceptors that demand the admin bearer token on every call but the
// health service's (probes carry no token). Should
// the same server also serve the unix socket, connections through it need
// no token: the socket's file mode admitted them.
func ServerOptions(cfg TCPConfig) ([]grpc.ServerOption, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" || cfg.TokenFile == "" {
		return nil, errors.New("the operator API on TCP needs a TLS certificate, its key and an admin token file")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load operator API certificate %s (key %s): %w", cfg.CertFile, cfg.KeyFile, err)
	}
	token, err := readServerToken(cfg.TokenFile)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(token)
	creds := &operatorCredentials{
		tls: credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}),
	}
	auth := &tokenAuth{want: sum, log: log}
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(auth.unary),
		grpc.ChainStreamInterceptor(auth.stream),
	}, nil
}

// ListenTCP listens on addr and returns a grpc.Server built with
// ServerOptions(cfg) for it; register the operator API on it (Register)
// and serve it on the listener.
func ListenTCP(addr string, cfg TCPConfig) (*grpc.Server, net.Listener, error) {
	opts, err := ServerOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for the operator API on %s: %w", addr, err)
	}
	return grpc.NewServer(opts...), l, nil
}

// readServerToken reads the admin token, refusing a file others can read
// and a token short enough to guess.
func readServerToken(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("admin token file %s has mode %04o: it must be private; run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	token, err := readToken(path)
	if err != nil {
		return nil, err
	}
	if len(token) < MinAdminTokenLength {
		return nil, fmt.Errorf("admin token in %s is %d bytes; use at least %d (for instance: head -c 32 /dev/urandom | base64 > %s)",
			path, len(token), MinAdminTokenLength, path)
	}
	return token, nil
}

// readToken reads a token file, trimmed of surrounding whitespace.
func readToken(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read admin token file: %w", err)
	}
	token := []byte(strings.TrimSpace(string(data)))
	if len(token) == 0 {
		return nil, fmt.Errorf("admin token file %s is empty", path)
	}
	return token, nil
}

// socketAuthInfo marks a connection that came through the operator unix
// socket, whose file mode already admitted the caller.
type socketAuthInfo struct{ credentials.CommonAuthInfo }

func (socketAuthInfo) AuthType() string { return "sandkey-operator-socket" }

// operatorCredentials pass unix-socket connections through and secure
// every other connection with TLS.
type operatorCredentials struct {
	tls credentials.TransportCredentials
}

func (c *operatorCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if conn.LocalAddr().Network() == "unix" {
		return conn, socketAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return c.tls.ServerHandshake(conn)
}

func (c *operatorCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("operator credentials are for the server side only")
}

func (c *operatorCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *operatorCredentials) Clone() credentials.TransportCredentials {
	return &operatorCredentials{tls: c.tls.Clone()}
}

func (c *operatorCredentials) OverrideServerName(string) error { return nil }

// healthMethods prefixes the gRPC health service's methods, open to
// callers without the admin token.
const healthMethods = "/grpc.health.v1.Health/"

// tokenAuth checks the admin bearer token of calls that did not come
// through the unix socket.
type tokenAuth struct {
	want [sha256.Size]byte // digest of the admin token
	log  *zap.Logger
}

func (a *tokenAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *tokenAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

func (a *tokenAuth) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthMethods) {
		// Probes (kubelet, grpc_health_probe) carry no token, and health
		// tells only whether the gateway serves.
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if ok {
		if _, local := p.AuthInfo.(socketAuthInfo); local {
			return nil
		}
	}
	err := a.checkBearer(ctx)
	if err != nil {
		addr := "unknown"
		if ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		a.log.Warn("refused operator API call", zap.String("method", method), zap.String("peer", addr), zap.Error(err))
	}
	return err
}

func (a *tokenAuth) checkBearer(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) != 1 {
		return status.Error(codes.Unauthenticated, "missing admin token: send \"authorization: Bearer <token>\"")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return status.Error(codes.Unauthenticated, "authorization is not \"Bearer <token>\"")
	}
	// Comparing digests keeps the comparison constant-time in the
	// token's length as well as its content.
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
		return status.Error(codes.Unauthenticated, "invalid admin token")
	}
	return nil
}
