package gatewaycmd

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/pkg/store/pgtest"

	"github.com/sandkey/sandkey/test/binaries"
)

// postgres is the package's Postgres server, started by the first test
// that needs it and stopped by TestMain.
var postgres pgtest.Shared

// pgDSN is a DSN of the test server's database with the given password,
// port and search_path.
func pgDSN(password string, port int, schema string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(pgtest.Role, password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/" + pgtest.Database,
		RawQuery: url.Values{"sslmode": {"disable"}, "search_path": {schema}}.Encode()}
	return u.String()
}

func TestServeRefusesAnUnusableStoreAtStartWithoutShowingThePassword(t *testing.T) {
	clearAdminEnv(t)
	srv := postgres.Server(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const wrong = "wrong-password-5c1e"
	tests := []struct {
		name, dsn, via, want string
	}{
		{"malformed DSN", "postgres://sandkey:" + srv.Password() + "@127.0.0.1:x/sandkey", "flag", "invalid Postgres DSN"},
		{"unreachable server", pgDSN(srv.Password(), closed, "public"), "flag", "cannot reach the server"},
		{"wrong password", pgDSN(wrong, srv.Port(), "public"), "flag", "wrong password"},
		{"wrong password from the environment", pgDSN(wrong, srv.Port(), "public"), "env", "wrong password"},
		{"wrong password from the config file", pgDSN(wrong, srv.Port(), "public"), "file", "wrong password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--state-dir", shortStateDir(t), "serve", "--http-addr", "", "--supervisor", self}
			switch tt.via {
			case "flag":
				args = append(args, "--store", tt.dsn)
			case "env":
				t.Setenv("SANDKEY_STORE", tt.dsn)
			case "file":
				args = append(args, "--config", writeConfig(t, "store: "+tt.dsn+"\n"))
			}
			code, _, stderr := runCLI(t, args...)
			if code != ExitUsage || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--store") {
				t.Fatalf("exit %d, stderr %q; want ExitUsage saying --store: ... %s", code, stderr, tt.want)
			}
			for _, secret := range []string{srv.Password(), wrong} {
				if strings.Contains(stderr, secret) {
					t.Errorf("stderr %q shows a password", stderr)
				}
			}
		})
	}
}

func TestServeKeepsItsStateInPostgresWhenGivenADSN(t *testing.T) {
	clearAdminEnv(t)
	srv := postgres.Server(t)
	_, schema, err := srv.NewSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgDSN(srv.Password(), srv.Port(), schema)
	state := shortStateDir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		done <- Main(ctx, []string{"--state-dir", state, "serve", "--store", dsn, "--http-addr", "", "--supervisor", self}, &stderr, &stderr)
	}()
	// The operator socket appears once the gateway has opened its store.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(state, AdminSocketName)); err == nil {
			break
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("serve ended with %d: %s", code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("serve did not open its operator socket: %s", stderr.String())
		}
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("serve ended with %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(state, "sandkey.db")); !os.IsNotExist(err) {
		t.Errorf("an SQLite store was created beside a Postgres one (stat: %v)", err)
	}
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if k, err := st.ActiveKey(context.Background()); err != nil {
		t.Fatalf("the gateway's first signing key is not in Postgres: %v", err)
	} else {
		t.Logf("active key %s in Postgres schema %s", k.KID, schema)
	}
}

// shortStateDir is a new state directory whose path leaves room for the
// sandboxes' unix sockets below it.
func shortStateDir(t *testing.T) string {
	t.Helper()
	state := binaries.TempDir(t, "skst")
	return state
}
