package gateway

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

// restoreStore puts back a copy of the store file taken earlier, as an
// operator restoring a backup does, and opens a new gateway on it.
func (e *env) restoreStore(backup []byte) {
	e.t.Helper()
	dbPath := filepath.Join(e.dir, "state", StoreFile)
	e.shutdown()
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(dbPath + suffix)
	}
	if err := os.WriteFile(dbPath, backup, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// backupStore closes and reopens the gateway (so the file holds every
// commit) and returns a copy of its store file.
func (e *env) backupStore() []byte {
	e.t.Helper()
	e.restart(0)
	backup, err := os.ReadFile(filepath.Join(e.dir, "state", StoreFile))
	if err != nil {
		e.t.Fatal(err)
	}
	return backup
}

// A sandbox stopped when the backup was taken, rotated and stopped since:
// its directory holds a generation the restored store forgot. A manual
// rotation of it must count on from that generation, as a start does.
func TestManualRotationOfAStoppedSandboxAfterARestoreCountsOnFromItsDirectory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("stopped")
	backup := e.backupStore()
	for range 3 {
		if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.g.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	held, err := e.dirTokenIgnoringExpiry(sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.restoreStore(backup)

	gen, err := e.g.Rotate(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if gen <= held.Gen() {
		t.Fatalf("manual rotation after the restore issued gen %d again: the directory held gen %d (jti %s)", gen, held.Gen(), held.JTI())
	}
}

// dirTokenIgnoringExpiry reads and verifies the token in a sandbox's
// directory, expired or not.
func (e *env) dirTokenIgnoringExpiry(id string) (*auth.Token, error) {
	raw, err := tokendir.ReadToken(e.g.tokenDir(id))
	if err != nil {
		return nil, err
	}
	return e.g.verify.VerifyIgnoringExpiry(string(raw), id)
}
