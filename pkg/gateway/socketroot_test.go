package gateway

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/memroot"
)

func TestSandboxSocketsLiveUnderTheSocketRootAndGoWithTheSandbox(t *testing.T) {
	e := newEnv(t)
	sb := e.create("one")
	state := e.config().StateDir
	dir := filepath.Join(memroot.SocketRoot(state), sb.ID)
	fi, err := os.Lstat(filepath.Join(dir, guest.SocketName))
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket under the socket root: %v (%v), want a 0600 socket", fi, err)
	}
	if _, err := os.Lstat(e.g.legacySocketDir(sb.ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a new sandbox got a socket directory of the old layout: %v", err)
	}
	if err := e.g.Delete(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket directory survived its sandbox: %v", err)
	}
}

// A sandbox made by a gateway before the socket root has its socket
// directory mounted from <state>/sandboxes/<id>/gw: a restart keeps
// listening there, or its supervisor could never reach the gateway again.
func TestASandboxOfTheOlderLayoutKeepsItsSocketDirectory(t *testing.T) {
	e := newEnv(t)
	sb := e.create("old")
	legacy := e.g.legacySocketDir(sb.ID)
	e.shutdown()
	if err := os.Mkdir(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	e.open()
	conn, err := net.Dial("unix", filepath.Join(legacy, guest.SocketName))
	if err != nil {
		t.Fatalf("no socket where the older layout put it: %v", err)
	}
	conn.Close()
	if got := e.g.socketDir(sb.ID); got != legacy {
		t.Errorf("socketDir = %s, want %s", got, legacy)
	}
}
