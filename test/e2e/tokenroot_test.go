package e2e

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/testmain"
	"github.com/sandkey/sandkey/test/binaries"
)

// TestTokensNeverReachTheStateDirectorysDisk runs the real gateway as root:
// it mounts a tmpfs at its token root, every token directory is on it, and
// after rotations no token's signature is in any file of the state
// directory's disk, the store and its write-ahead log included.
func TestTokensNeverReachTheStateDirectorysDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		testmain.SkipIfMissing(t, errors.New("the gateway mounts its token root only as root"), true)
	}
	dir := binaries.TempDir(t, "sk")
	state := filepath.Join(dir, "state")
	g := startGatewayBinary(t, state)
	var ids []string
	t.Cleanup(func() {
		for _, id := range ids {
			g.cli("sandbox", "delete", id)
		}
		g.kill()
	})
	root := binaries.TokenDir(state, "")
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("token root %s: file system 0x%x (%v), want tmpfs", root, st.Type, err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := g.cli("sandbox", "create", name, "--start", "--", "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	for _, sb := range g.list() {
		ids = append(ids, sb.ID)
	}

	// Watch the directories through two rotations (10s tokens rotate
	// after 5s), keeping every token's signature.
	signatures := map[string]bool{}
	deadline := time.Now().Add(40 * time.Second)
	for rotated := false; !rotated; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no two rotations within 40s: %+v", g.list())
		}
		rotated = true
		for _, id := range ids {
			raw, err := tokendir.ReadToken(binaries.TokenDir(state, id))
			if err != nil {
				rotated = false
				continue
			}
			signatures[string(raw[bytes.LastIndexByte(raw, '.')+1:])] = true
		}
		for _, sb := range g.list() {
			rotated = rotated && sb.LatestGen >= 3
		}
	}
	for _, id := range ids {
		if err := unix.Statfs(binaries.TokenDir(state, id), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Errorf("token directory of %s: file system 0x%x (%v), want tmpfs", id, st.Type, err)
		}
	}

	// Every file on the state directory's disk, read whole, the store
	// (sandkey.db, -wal, -shm) included: it keeps only each generation's
	// metadata.
	store := filepath.Join(state, "sandkey.db")
	checked := 0
	storeFiles := map[string]bool{}
	err := filepath.WalkDir(state, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == root {
			return filepath.SkipDir // the tmpfs
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if strings.HasPrefix(path, store) {
			storeFiles[strings.TrimPrefix(path, store)] = true
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for sig := range signatures {
			if bytes.Contains(data, []byte(sig)) {
				t.Errorf("%s holds a token's signature", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !storeFiles[""] || !storeFiles["-wal"] {
		t.Errorf("store files checked: %v; want sandkey.db and its -wal", storeFiles)
	}
	if checked == 0 || len(signatures) < 2*len(ids) {
		t.Fatalf("checked %d files for %d signatures: the test saw too little", checked, len(signatures))
	}
	t.Logf("%d files on the state directory's disk hold none of %d token signatures", checked, len(signatures))
}
