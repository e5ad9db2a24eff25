package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/unixsock"
)

// AttestedInfo is the gRPC AuthInfo of a connection accepted on a
// per-sandbox socket: it can only come from SandboxID.
type AttestedInfo struct {
	credentials.CommonAuthInfo
	SandboxID string
}

// AuthType names the attestation.
func (AttestedInfo) AuthType() string { return "sandkey-attested" }

// AttestedSandbox returns the sandbox whose per-sandbox socket carried the
// call of ctx, or false when the call came over a shared listener.
func AttestedSandbox(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(AttestedInfo)
	if !ok || info.SandboxID == "" {
		return "", false
	}
	return info.SandboxID, true
}

// ServerCredentials wraps the credentials of the shared listeners (nil for
// plaintext) so that connections accepted by a sandbox socket listener are
// attested for that sandbox and skip the shared handshake. Install it with
// grpc.Creds on the one server that serves every listener; ServerOptions
// does.
func ServerCredentials(shared credentials.TransportCredentials) credentials.TransportCredentials {
	if shared == nil {
		shared = plainCredentials{level: credentials.NoSecurity}
	}
	return &attestingCredentials{shared: shared}
}

type attestingCredentials struct {
	shared credentials.TransportCredentials
}

func (c *attestingCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if ac, ok := conn.(*attestedConn); ok {
		return ac, AttestedInfo{
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
			SandboxID:      ac.sandboxID,
		}, nil
	}
	return c.shared.ServerHandshake(conn)
}

func (c *attestingCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.shared.ClientHandshake(ctx, authority, conn)
}

func (c *attestingCredentials) Info() credentials.ProtocolInfo { return c.shared.Info() }

func (c *attestingCredentials) Clone() credentials.TransportCredentials {
	return &attestingCredentials{shared: c.shared.Clone()}
}

func (c *attestingCredentials) OverrideServerName(name string) error {
	//lint:ignore SA1019 the interface still requires it; delegate.
	return c.shared.OverrideServerName(name)
}

// ListenSandboxSocket creates dir (mode 0700) and listens on the unix
// socket dir/gw.sock (mode 0600). Every connection it accepts is attested
// for sandboxID. A stale socket file is removed (RemoveStaleSocket); a live
// one, or any other file in the way, is an error. Closing the listener
// removes the socket and closes the connections it accepted.
func ListenSandboxSocket(dir, sandboxID string) (net.Listener, error) {
	if sandboxID == "" {
		return nil, fmt.Errorf("listen on sandbox socket in %s: empty sandbox id", dir)
	}
	// A gateway's restart finds every sandbox's directory as it left it: it
	// is only made and chmodded (MkdirAll is subject to the umask and
	// leaves an existing dir as it is) when it is not a 0700 directory
	// already, which saves a metadata write per socket.
	if fi, err := os.Lstat(dir); err != nil || fi.Mode() != os.ModeDir|0o700 {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("listen on sandbox socket for %s: %w", sandboxID, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("listen on sandbox socket for %s: %w", sandboxID, err)
		}
	}
	path := filepath.Join(dir, guest.SocketName)
	if err := RemoveStaleSocket(path); err != nil {
		return nil, fmt.Errorf("listen on sandbox socket for %s: %w", sandboxID, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on sandbox socket for %s: %w", sandboxID, err)
	}
	// Between bind and chmod the socket has umask permissions, but only
	// the owner can traverse the 0700 directory.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("listen on sandbox socket for %s: %w", sandboxID, err)
	}
	return &attestedListener{Listener: l, sandboxID: sandboxID, conns: map[*attestedConn]struct{}{}}, nil
}

// RemoveStaleSocket removes the unix socket at path only once a dial has
// proved that nothing listens on it (ECONNREFUSED): the socket of a live
// gateway is left alone and refused with an error saying so, and so is
// anything that is not a socket, or a socket the probe cannot judge. A
// missing path is no error.
func RemoveStaleSocket(path string) error {
	err := unixsock.RemoveStale(path, unixsock.Dialled)
	if errors.Is(err, unixsock.ErrServing) {
		return fmt.Errorf("another gateway is serving on %s; stop it first", path)
	}
	return err
}

// attestedListener marks the connections it accepts with its sandbox and
// tracks them, so that closing it cuts the sandbox off.
type attestedListener struct {
	net.Listener
	sandboxID string

	mu     sync.Mutex
	conns  map[*attestedConn]struct{}
	closed bool
}

func (l *attestedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ac := &attestedConn{Conn: c, sandboxID: l.sandboxID, owner: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[ac] = struct{}{}
	return ac, nil
}

func (l *attestedListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[*attestedConn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

func (l *attestedListener) forget(c *attestedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

type attestedConn struct {
	net.Conn
	sandboxID string
	owner     *attestedListener
	closeOnce sync.Once
}

func (c *attestedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.owner.forget(c) })
	return err
}

// Listeners serves many listeners with one gRPC server: one socket per
// sandbox, added and removed as sandboxes come and go, plus shared ones.
// Each listener is served by a goroutine that Listeners owns. A shared
// listener's goroutine is gRPC's Serve; a sandbox socket's only accepts
// and hands its connections to the one Serve of every sandbox socket
// (sockets): gRPC's Serve keeps an 8 KiB stack, which for thousands of
// sandboxes is most of what a socket costs.
type Listeners struct {
	srv *grpc.Server
	log *zap.Logger

	mu     sync.Mutex
	served map[string]*servedListener
	closed bool
	// sockets is the listener gRPC serves the sandbox sockets'
	// connections on, and socketsDone is closed when that Serve returned;
	// both nil until the first sandbox socket.
	sockets     *fanIn
	socketsDone chan struct{}
}

type servedListener struct {
	lis  net.Listener
	done chan struct{}
}

// NewListeners returns an empty set serving srv. logger may be nil.
func NewListeners(srv *grpc.Server, logger *zap.Logger) *Listeners {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Listeners{srv: srv, log: logger, served: map[string]*servedListener{}}
}

// AddSandbox listens on dir/gw.sock for sandboxID (see ListenSandboxSocket)
// and serves it. It returns the socket path. A sandbox that already has a
// socket gets a new one in its place.
func (ls *Listeners) AddSandbox(dir, sandboxID string) (string, error) {
	if err := ls.Remove(sandboxKey(sandboxID)); err != nil {
		return "", err
	}
	l, err := ListenSandboxSocket(dir, sandboxID)
	if err != nil {
		return "", err
	}
	if err := ls.serve(sandboxKey(sandboxID), l); err != nil {
		return "", err
	}
	return filepath.Join(dir, guest.SocketName), nil
}

// RemoveSandbox stops serving sandboxID's socket, removes it and closes
// the connections that came through it.
func (ls *Listeners) RemoveSandbox(sandboxID string) error {
	return ls.Remove(sandboxKey(sandboxID))
}

// AddShared serves a listener that is not attested (a TCP or TLS listener
// for remote supervisors) under name.
func (ls *Listeners) AddShared(name string, l net.Listener) error {
	if err := ls.Remove(sharedKey(name)); err != nil {
		return err
	}
	return ls.serve(sharedKey(name), l)
}

// RemoveShared stops serving the shared listener name.
func (ls *Listeners) RemoveShared(name string) error { return ls.Remove(sharedKey(name)) }

// Len returns how many listeners are served.
func (ls *Listeners) Len() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.served)
}

func sandboxKey(id string) string  { return "sandbox/" + id }
func sharedKey(name string) string { return "shared/" + name }

func (ls *Listeners) serve(key string, l net.Listener) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		_ = l.Close()
		return fmt.Errorf("serve listener %s: listener set is closed", key)
	}
	sl := &servedListener{lis: l, done: make(chan struct{})}
	ls.served[key] = sl
	if _, sandbox := l.(*attestedListener); sandbox {
		ls.serveSocketsLocked()
		go func() {
			defer close(sl.done)
			ls.sockets.feed(l)
		}()
		return nil
	}
	go func() {
		defer close(sl.done)
		// Serve returns when the listener is closed (by Remove, or by the
		// server's Stop); either way there is nothing left to do.
		if err := ls.srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			ls.log.Debug("listener stopped", zap.String("listener", key), zap.Error(err))
		}
	}()
	return nil
}

// serveSocketsLocked starts serving the sandbox sockets' connections,
// once.
func (ls *Listeners) serveSocketsLocked() {
	if ls.sockets != nil {
		return
	}
	ls.sockets = newFanIn()
	ls.socketsDone = make(chan struct{})
	go func(f *fanIn, done chan struct{}) {
		defer close(done)
		if err := ls.srv.Serve(f); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			ls.log.Debug("sandbox sockets stopped", zap.Error(err))
		}
	}(ls.sockets, ls.socketsDone)
}

// Remove stops serving the listener under key; no such key is no error.
func (ls *Listeners) Remove(key string) error {
	ls.mu.Lock()
	sl, ok := ls.served[key]
	delete(ls.served, key)
	ls.mu.Unlock()
	if !ok {
		return nil
	}
	err := sl.lis.Close()
	<-sl.done
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close listener %s: %w", key, err)
	}
	return nil
}

// Close stops serving every listener; the gRPC server itself stays up.
func (ls *Listeners) Close() {
	ls.mu.Lock()
	ls.closed = true
	keys := make([]string, 0, len(ls.served))
	for k := range ls.served {
		keys = append(keys, k)
	}
	ls.mu.Unlock()
	for _, k := range keys {
		_ = ls.Remove(k)
	}
	ls.mu.Lock()
	sockets, done := ls.sockets, ls.socketsDone
	ls.mu.Unlock()
	if sockets != nil {
		_ = sockets.Close()
		<-done
	}
}

// fanIn is one listener made of many: Accept returns the connections that
// feed accepted on each of them. Closing it closes them all, as gRPC's
// Stop closes every listener it serves.
type fanIn struct {
	conns  chan net.Conn
	closed chan struct{}

	mu    sync.Mutex
	lis   map[net.Listener]struct{}
	ended bool
}

func newFanIn() *fanIn {
	return &fanIn{conns: make(chan net.Conn), closed: make(chan struct{}), lis: map[net.Listener]struct{}{}}
}

// feed accepts connections on l and hands each to Accept, until l or f is
// closed.
func (f *fanIn) feed(l net.Listener) {
	f.mu.Lock()
	if f.ended {
		f.mu.Unlock()
		_ = l.Close()
		return
	}
	f.lis[l] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.lis, l)
		f.mu.Unlock()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		select {
		case f.conns <- c:
		case <-f.closed:
			_ = c.Close()
			return
		}
	}
}

func (f *fanIn) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

// Close closes f and every listener feeding it.
func (f *fanIn) Close() error {
	f.mu.Lock()
	if f.ended {
		f.mu.Unlock()
		return nil
	}
	f.ended = true
	close(f.closed)
	lis := f.lis
	f.lis = map[net.Listener]struct{}{}
	f.mu.Unlock()
	for l := range lis {
		_ = l.Close()
	}
	return nil
}

// Addr names the sandbox sockets as one.
func (f *fanIn) Addr() net.Addr { return &net.UnixAddr{Name: "sandbox-sockets", Net: "unix"} }
