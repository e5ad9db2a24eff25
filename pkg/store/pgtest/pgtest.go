package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/testmain"
)

// Package is the Debian package that ships the server.
const Package = "postgresql"

// Role is the login role tests connect as; it owns Database.
const Role = "sandkey"

// Database is the database the test schemas live in.
const Database = "sandkey"

// startTimeout bounds the wait for a launched server to accept connections.
const startTimeout = 60 * time.Second

// stopTimeout bounds the wait for a fast shutdown before SIGKILL.
const stopTimeout = 15 * time.Second

// MissingError says that the Postgres server programs are not installed.
type MissingError struct {
	Binary string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found on PATH or in /usr/lib/postgresql/*/bin: install the Debian package %s (scripts/test-deps.sh installs it)",
		e.Binary, Package)
}

// Server is a running private Postgres server.
type Server struct {
	dir      string
	port     int
	password string
	postgres string              // the server binary
	cred     *syscall.Credential // who runs it; nil: ourselves
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the server process has ended
	admin    *sql.DB       // superuser over the unix socket
	schemas  atomic.Int64
}

// Port is the TCP port the server listens on, on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Password is the Role's password.
func (s *Server) Password() string { return s.password }

// Dir is the server's private directory (its data and unix socket).
func (s *Server) Dir() string { return s.dir }

// DSN is the URL of the Role's Database over TCP, with extra parameters
// (such as search_path) added.
func (s *Server) DSN(params url.Values) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(Role, s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + Database,
		RawQuery: params.Encode(),
	}
	return u.String()
}

// AdminDSN reaches the server as its superuser over the unix socket.
func (s *Server) AdminDSN(database string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.dir, s.port, database)
}

// NewSchema creates an empty schema owned by Role in Database and returns
// a DSN whose search_path is that schema alone.
func (s *Server) NewSchema(ctx context.Context) (dsn, schema string, err error) {
	schema = fmt.Sprintf("t%d", s.schemas.Add(1))
	db, err := sql.Open("pgx", s.AdminDSN(Database))
	if err != nil {
		return "", "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", schema, Role)); err != nil {
		return "", "", fmt.Errorf("create schema %s: %w", schema, err)
	}
	return s.DSN(url.Values{"search_path": {schema}, "sslmode": {"disable"}}), schema, nil
}

// Launch starts a private server and returns it once it accepts
// connections. The error is a *MissingError when Postgres is not installed.
func Launch() (*Server, error) {
	initdb, err := findBinary("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := findBinary("postgres")
	if err != nil {
		return nil, err
	}
	// Short: the socket path (dir/.s.PGSQL.<port>) must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "sk-pg-")
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
		}
	}
	s := &Server{dir: dir, password: randid.New(16)}
	if err := s.start(initdb, postgres, cred); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(initdb, postgres string, cred *syscall.Credential) error {
	s.postgres, s.cred = postgres, cred
	data := filepath.Join(s.dir, "data")
	out, err := command(cred, initdb, "-D", data, "-U", "postgres", "-N", "-E", "UTF8", "--locale=C",
		"--auth-local=trust", "--auth-host=scram-sha-256").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb in %s: %w: %s", data, err, out)
	}
	// The free port may be taken by another process before the server
	// binds it: then try another.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		err = s.serve(port)
		if err == nil {
			return s.createRole()
		}
		if attempt == portAttempts || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
	}
}

// portAttempts is how many free ports Launch tries.
const portAttempts = 3

// serve starts the server on port and waits until it accepts connections.
func (s *Server) serve(port int) error {
	s.port = port
	data := filepath.Join(s.dir, "data")
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd = command(s.cred, s.postgres, "-D", data, "-k", s.dir, "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// Should the test binary die without Stop, the server goes too
	// (SIGQUIT: immediate shutdown, which also ends its backends).
	s.cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		s.cmd.Wait() //nolint:errcheck // the exit is reported through exited
		close(exited)
	}()
	if err := s.waitReady(); err != nil {
		logText, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		return fmt.Errorf("%w; server log:\n%s", err, logText)
	}
	return nil
}

func (s *Server) waitReady() error {
	db, err := sql.Open("pgx", s.AdminDSN("postgres"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			s.admin = db
			return nil
		}
		select {
		case <-s.exited:
			db.Close()
			return fmt.Errorf("postgres exited before accepting connections: %v", s.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			db.Close()
			return fmt.Errorf("postgres did not accept connections within %v: %w", startTimeout, err)
		}
	}
}

func (s *Server) createRole() error {
	ctx := context.Background()
	for _, stmt := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", Role, s.password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", Database, Role),
	} {
		if _, err := s.admin.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("prepare test database: %w", err)
		}
	}
	return nil
}

// Stop ends the server by its PID and removes its directory.
func (s *Server) Stop() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
	}
	errs = append(errs, s.shutdown(), os.RemoveAll(s.dir))
	return errors.Join(errs...)
}

// Restart stops the server (fast shutdown: every connection is cut) and
// starts it again on the same port and data, as an operator's restart or
// a failover would. It returns once the server accepts connections again.
func (s *Server) Restart() error {
	if err := s.StopServer(); err != nil {
		return err
	}
	return s.StartServer()
}

// StopServer stops the server (fast shutdown: every connection is cut)
// and leaves it down, keeping its port and data, until StartServer: for
// tests of what clients do while the database is away.
func (s *Server) StopServer() error {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	return s.shutdown()
}

// StartServer starts a server StopServer stopped, on the same port and
// data, and returns once it accepts connections.
func (s *Server) StartServer() error { return s.serve(s.port) }

// shutdown ends the server process by its PID: SIGINT (fast shutdown),
// SIGKILL if it does not end in time.
func (s *Server) shutdown() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("postgres (pid %d) ignored SIGINT for %v; killed", s.cmd.Process.Pid, stopTimeout)
	}
}

// command runs bin as the postgres user when cred is set.
func command(cred *syscall.Credential, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// serverCredential is who runs the server: the postgres user when we are
// root (Postgres refuses root), ourselves otherwise (nil).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the Postgres server refuses to run as root and there is no postgres user (%v): install the Debian package %s", err, Package)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// findBinary looks for a server program on PATH, then in Debian's
// versioned directories, newest first.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &MissingError{Binary: name}
}

// version is N of /usr/lib/postgresql/N/bin.
func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Shared is a server that a package's tests share: it starts at the first
// test that asks for it, and the package's TestMain stops it after m.Run.
type Shared struct {
	once   sync.Once
	server *Server
	err    error
}

// Server returns the shared server, starting it on the first call. When
// Postgres is not installed, it skips t, or fails it under CI=true; when
// it failed to start, it fails t (and every later caller).
func (s *Shared) Server(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() { s.server, s.err = Launch() })
	if s.err != nil {
		testmain.SkipIfMissing(t, s.err, errors.As(s.err, new(*MissingError)))
	}
	return s.server
}

// Own starts a server for t alone, stopped when t ends, and returns it
// with the DSN of a fresh schema on it: for a test that restarts or cuts
// its server, which would cut every other test's connections to a shared
// one. A missing Postgres skips t, or fails it under CI=true, as Server.
func Own(t testing.TB) (*Server, string) {
	t.Helper()
	var own Shared
	srv := own.Server(t)
	t.Cleanup(func() {
		if err := own.Stop(); err != nil {
			t.Error(err)
		}
	})
	return srv, own.NewSchema(t)
}

// NewSchema returns the DSN of a fresh, empty schema on the shared server.
func (s *Shared) NewSchema(t testing.TB) string {
	t.Helper()
	dsn, _, err := s.Server(t).NewSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Stop stops the server if it was started. Call it once, after every test
// that used it has ended.
func (s *Shared) Stop() error {
	s.once.Do(func() {}) // no start from now on
	if s.server == nil {
		return nil
	}
	return s.server.Stop()
}
