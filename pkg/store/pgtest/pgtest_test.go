package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerServesItsRoleOverTCPAndStopsByPID(t *testing.T) {
	var shared Shared
	srv := shared.Server(t)
	ctx := context.Background()
	dsn, schema, err := srv.NewSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	var user, current string
	if err := db.QueryRowContext(ctx, "SELECT current_user, current_schema()").Scan(&user, &current); err != nil {
		db.Close()
		t.Fatalf("connect as %s with its password: %v", Role, err)
	}
	if user != Role || current != schema {
		t.Errorf("connected as %s in schema %s, want %s in %s", user, current, Role, schema)
	}
	// Text sorts bytewise, as in SQLite.
	var order string
	if err := db.QueryRowContext(ctx, "SELECT string_agg(x, '' ORDER BY x) FROM (VALUES ('b'), ('B'), ('a')) v(x)").Scan(&order); err != nil || order != "Bab" {
		t.Errorf("collation orders b, B, a as %q (%v), want Bab", order, err)
	}
	db.Close()

	wrong := strings.Replace(dsn, srv.Password(), "wrong", 1)
	if db, err := sql.Open("pgx", wrong); err == nil {
		err = db.PingContext(ctx)
		db.Close()
		if err == nil {
			t.Error("a wrong password was accepted over TCP")
		}
	}

	pid, dir := srv.cmd.Process.Pid, srv.Dir()
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres pid %d after Stop: kill -0 says %v, want no such process", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after Stop: %v, want it removed", dir, err)
	}
}

func TestMissingPostgresSkipsOnDeveloperMachinesAndFailsInCI(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := findBinary("no-such-postgres-binary"); !errors.As(err, new(*MissingError)) ||
		!strings.Contains(err.Error(), Package) {
		t.Fatalf("findBinary = %v, want a *MissingError naming %s", err, Package)
	}
	for _, tc := range []struct {
		ci       string
		wantSkip bool
	}{{"", true}, {"true", false}} {
		t.Setenv("CI", tc.ci)
		shared := &Shared{}
		shared.once.Do(func() { shared.err = &MissingError{Binary: "initdb"} })
		rec := &recorder{TB: t}
		func() {
			defer func() {
				if r := recover(); r != nil && r != (stop{}) {
					panic(r)
				}
			}()
			shared.Server(rec)
		}()
		skipped, failed := rec.skipped, rec.failed
		if skipped != tc.wantSkip || failed == tc.wantSkip {
			t.Errorf("CI=%q: skipped %v, failed %v; want skipped %v", tc.ci, skipped, failed, tc.wantSkip)
		}
	}
}

// recorder is a testing.TB that records a skip or a failure instead of
// ending the test, and stops its goroutine as they would.
type recorder struct {
	testing.TB
	skipped, failed bool
}

type stop struct{}

func (r *recorder) Helper()               {}
func (r *recorder) Skipf(string, ...any)  { r.skipped = true; panic(stop{}) }
func (r *recorder) Fatal(...any)          { r.failed = true; panic(stop{}) }
func (r *recorder) Fatalf(string, ...any) { r.failed = true; panic(stop{}) }

// StopServer leaves the server down on its port, cutting its clients;
// StartServer brings the same data back there.
func TestStopServerKeepsPortAndDataUntilStartServer(t *testing.T) {
	var shared Shared
	srv := shared.Server(t)
	defer shared.Stop()
	ctx := context.Background()
	dsn, _, err := srv.NewSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('before the stop')"); err != nil {
		t.Fatal(err)
	}
	port := srv.Port()
	if err := srv.StopServer(); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err == nil {
		t.Error("the server answers after StopServer")
	}
	if err := srv.StartServer(); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port {
		t.Errorf("port %d after StartServer, was %d", srv.Port(), port)
	}
	var v string
	if err := db.QueryRowContext(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before the stop" {
		t.Errorf("after StartServer: %q, %v; want the row written before the stop", v, err)
	}
}
