package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/bearer"
)

// ErrNoGateway is returned by Dial when no gateway listens on the
// operator socket.
var ErrNoGateway = errors.New("no gateway is running")

// ErrDialSettings is returned by Dial for settings it cannot use: an
// address that is neither a path nor host:port, a token file or CA bundle
// that is missing or holds nothing. The operator must fix them; no call
// was made.
var ErrDialSettings = errors.New("bad operator API setting")

// DialOptions are what Dial needs for a TCP operator API; a unix socket
// needs none.
type DialOptions struct {
	// TokenFile holds the admin bearer token.
	TokenFile string
	// CAFile is a PEM bundle of the CAs that may sign the gateway's
	// certificate; the system's roots when empty.
	CAFile string
}

// Dial connects to the operator API at addr: a unix socket path
// ("/path" or "unix:///path"), or "host:port" (optionally "tls://host:port")
// over TLS with the admin token sent on every call. A unix socket is
// probed right away, so that a gateway that is not running is reported as
// ErrNoGateway rather than as a failed call later. Close the returned
// Closer when done.
func Dial(ctx context.Context, addr string, opts DialOptions) (adminpb.AdminClient, io.Closer, error) {
	if path, ok := unixPath(addr); ok {
		return dialUnix(ctx, path)
	}
	hostport := strings.TrimPrefix(addr, "tls://")
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return nil, nil, fmt.Errorf("%w: --admin %q: want a unix socket path (/path or unix:///path) or host:port", ErrDialSettings, addr)
	}
	return dialTLS(hostport, opts)
}

// unixPath returns the socket path of a unix operator address.
func unixPath(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		return p, true
	}
	return addr, strings.HasPrefix(addr, "/")
}

func dialUnix(ctx context.Context, path string) (adminpb.AdminClient, io.Closer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, nil, fmt.Errorf("%w at %s", ErrNoGateway, path)
	case errors.Is(err, syscall.EACCES):
		return nil, nil, fmt.Errorf("operator socket %s: permission denied: it is private to the user the gateway runs as", path)
	case err != nil:
		return nil, nil, fmt.Errorf("connect to operator socket %s: %w", path, err)
	}
	c.Close()
	conn, err := grpc.NewClient("passthrough:///admin.sock",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("operator socket %s: %w", path, err)
	}
	return adminpb.NewAdminClient(conn), conn, nil
}

func dialTLS(hostport string, opts DialOptions) (adminpb.AdminClient, io.Closer, error) {
	if opts.TokenFile == "" {
		return nil, nil, fmt.Errorf("%w: operator API at %s is reached over TCP, which needs the admin token: pass its file with --admin-token-file (or SANDKEY_ADMIN_TOKEN_FILE)", ErrDialSettings, hostport)
	}
	token, err := readToken(opts.TokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --admin-token-file: %w", ErrDialSettings, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --admin-ca: read operator API CA bundle: %w", ErrDialSettings, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("%w: --admin-ca: operator API CA bundle %s holds no PEM certificate", ErrDialSettings, opts.CAFile)
		}
	}
	conn, err := grpc.NewClient("passthrough:///"+hostport,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithPerRPCCredentials(bearer.Credentials{Token: bearer.Fixed(string(token)), RequireTLS: true}))
	if err != nil {
		return nil, nil, fmt.Errorf("operator API at %s: %w", hostport, err)
	}
	return adminpb.NewAdminClient(conn), conn, nil
}
