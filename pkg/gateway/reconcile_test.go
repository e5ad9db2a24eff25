package gateway

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/memroot"
)

// A sandbox the store does not know runs: the store was restored from a
// backup taken before its start (or the gateway was killed between the
// driver's start and the store's record of it). The restarted gateway
// finds it with its driver, opens its socket and keeps its token fresh:
// a running sandbox's token never lapses because the store forgot its
// start.
func TestARunningSandboxTheStoreThinksStoppedIsReconciled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb, err := e.g.Create(ctx, CreateRequest{Name: "unrecorded", Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	backup := e.backupStore()
	if _, err := e.g.Start(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	e.restoreStore(backup)

	got, err := e.g.Get(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateRunning {
		t.Errorf("after the restart: state %s, want %s (its process runs)", got.State, StateRunning)
	}
	if _, err := os.Stat(filepath.Join(e.g.socketDir(sb.ID), "gw.sock")); err != nil {
		t.Errorf("its supervisor has no socket to reach the gateway: %v", err)
	}
	// Two half lifetimes, a sweep after each: past the first token's expiry
	// and its verifiers' leeway.
	for range 2 {
		e.clock.Add(lifetime / 2)
		if _, err := e.g.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Add(auth.Leeway + time.Second)
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dirToken(sb.ID); err != nil {
		t.Fatalf("a lifetime after the restart, its token directory: %v (the token lapsed while it runs)", err)
	}
}

// A token directory whose token is not a token of its sandbox (truncated,
// tampered with) is rewritten by a restart's reconcile, as an empty one
// is: the directory is the channel a sandbox recovers from, and its
// workload may read it, so it must not wait for the next rotation point.
func TestRestartRewritesATokenDirectoryWhoseTokenIsBad(t *testing.T) {
	for name, bad := range map[string]func(e *env, id string) []byte{
		"garbage": func(*env, string) []byte { return []byte("not a token\n") },
		"truncated": func(e *env, id string) []byte {
			raw, _ := tokendir.ReadToken(e.g.tokenDir(id))
			return raw[:len(raw)/2]
		},
		"empty": func(*env, string) []byte { return nil },
		"another sandbox's": func(e *env, _ string) []byte {
			other := e.create("other")
			raw, _ := tokendir.ReadToken(e.g.tokenDir(other.ID))
			return raw
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			sb := e.create("victim")
			w, err := tokendir.NewWriter(e.g.tokenDir(sb.ID))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(map[string][]byte{tokendir.TokenFile: bad(e, sb.ID), tokendir.JWKSFile: e.g.JWKSJSON()}); err != nil {
				t.Fatal(err)
			}
			e.restart(0)
			if _, err := e.dirToken(sb.ID); err != nil {
				t.Fatalf("after the restart, the token directory: %v", err)
			}
		})
	}
}

// Something that is not a socket where a sandbox's socket goes (a stray
// file, a directory) is left alone, and keeps that one sandbox's
// supervisor from its session; it must not keep the gateway from
// starting and serving every other sandbox.
func TestAStrayEntryAtOneSandboxSocketDoesNotStopTheGateway(t *testing.T) {
	e := newEnv(t)
	blocked, other := e.create("blocked"), e.create("other")
	e.shutdown()
	sock := filepath.Join(memroot.SocketRoot(e.config().StateDir), blocked.ID, guest.SocketName)
	if _, err := os.Lstat(sock); err == nil {
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(sock, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.open()
	if _, err := os.Stat(filepath.Join(e.g.socketDir(other.ID), "gw.sock")); err != nil {
		t.Errorf("the other sandbox's socket: %v", err)
	}
	if data, err := os.ReadFile(sock); err != nil || string(data) != "not a socket" {
		t.Errorf("the stray file was touched: %q, %v", data, err)
	}
	if _, err := e.dirToken(other.ID); err != nil {
		t.Errorf("the other sandbox's token: %v", err)
	}
}

// One sandbox whose driver cannot say its state (its process driver's
// record is corrupt) is left as the store has it and reported; the
// gateway still starts and serves every other sandbox.
func TestOneSandboxWhoseDriverCannotSayItsStateDoesNotStopTheGateway(t *testing.T) {
	e := newEnv(t)
	broken, other := e.create("broken"), e.create("other")
	e.shutdown()
	var records []string
	filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "pid" && strings.Contains(path, broken.ID) {
			records = append(records, path)
		}
		return nil
	})
	if len(records) != 1 {
		t.Fatalf("process driver records of %s: %v, want one", broken.ID, records)
	}
	if err := os.WriteFile(records[0], []byte(`{"pid": 12`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(lifetime) // every token is due
	e.open()
	if _, err := os.Stat(filepath.Join(e.g.socketDir(other.ID), "gw.sock")); err != nil {
		t.Errorf("the other sandbox's socket: %v", err)
	}
	if _, err := e.dirToken(other.ID); err != nil {
		t.Errorf("the other sandbox's token: %v", err)
	}
}
