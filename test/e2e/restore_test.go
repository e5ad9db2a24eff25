package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkey/sandkey/test/binaries"
)

// logLine is what these tests read of a JSON log line (the gateway's or a
// supervisor's).
type logLine struct {
	TS      float64 `json:"ts"`
	Msg     string  `json:"msg"`
	Sandbox string  `json:"sandbox"`
	Gen     uint64  `json:"gen"`
	JTI     string  `json:"jti"`
	Code    string  `json:"code"`
}

func (l logLine) time() time.Time {
	sec, frac := math.Modf(l.TS)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// readLog returns the JSON lines of path from byte offset on.
func readLog(t *testing.T, path string, offset int64) []logLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if bytes.HasPrefix(sc.Bytes(), []byte("{")) && json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestSupervisorRecoversFromStoreRestoredFromBackup runs issue 12's steps
// with the real gateway binary, its SQLite store and real supervisors:
// three sandboxes; stop the gateway and copy sandkey.db; start it and let
// it rotate twice; stop it, put the old copy back, start it. No
// generation of any sandbox may ever have two jtis (every token the
// gateway minted and every token a supervisor took is looked at), no
// supervisor's Hello may be refused, and every supervisor holds a token
// of the restored gateway in a session within a second of it being ready.
func TestSupervisorRecoversFromStoreRestoredFromBackup(t *testing.T) {
	const sandboxes = 3
	dir := binaries.TempDir(t, "sk")
	state := filepath.Join(dir, "state")
	gwLog := filepath.Join(dir, "gateway.log")
	dbPath := filepath.Join(state, "sandkey.db")
	debug := []string{"--log-level", "debug"} // the gateway logs every mint's gen and jti
	g := startGatewayBinary(t, state, debug...)
	var ids []string
	t.Cleanup(func() {
		for _, id := range ids {
			g.cli("sandbox", "delete", id)
		}
		g.kill()
		if t.Failed() {
			logs, _ := os.ReadFile(gwLog)
			kept := filepath.Join(os.TempDir(), "sandkey-restore-test-gateway.log")
			os.WriteFile(kept, logs, 0o600)
			t.Logf("gateway log kept at %s", kept)
		}
	})
	for i := range sandboxes {
		if _, err := g.cli("sandbox", "create", fmt.Sprintf("sb%d", i), "--start", "--", "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	for _, sb := range g.list() {
		ids = append(ids, sb.ID)
	}
	supLog := func(id string) string { return filepath.Join(state, "sandboxes", id, "driver", "sandbox.log") }
	ledger := genLedger{}
	settled := func(g *gatewayProc, atLeast map[string]uint64) func() bool {
		return func() bool {
			ledger.observe(t, state, ids)
			for _, sb := range g.list() {
				if !sb.Connected || sb.DeliveredGen != sb.LatestGen || sb.LatestGen < atLeast[sb.ID] {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 30*time.Second, "every sandbox registered", settled(g, nil),
		func() string { return fmt.Sprintf("%+v", g.list()) })

	// The backup.
	backupGen := map[string]uint64{}
	for _, sb := range g.list() {
		backupGen[sb.ID] = sb.LatestGen
	}
	g.stop()
	backup, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dbPath + "-wal"); err == nil {
		t.Fatal("the stopped gateway left a WAL file: the copy would miss its commits")
	}

	// Two rotations the backup does not know of.
	g = startGatewayBinary(t, state, debug...)
	past := map[string]uint64{}
	for id, gen := range backupGen {
		past[id] = gen + 2
	}
	waitFor(t, 30*time.Second, "two rotations after the backup", settled(g, past),
		func() string { return fmt.Sprintf("%+v", g.list()) })
	g.stop()

	// The restore.
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(dbPath + suffix)
	}
	if err := os.WriteFile(dbPath, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	gwOffset := fileSize(t, gwLog)
	supOffset := map[string]int64{}
	for _, id := range ids {
		supOffset[id] = fileSize(t, supLog(id))
	}
	g = startGatewayBinary(t, state, debug...)

	// Recovery, read from the processes' own logs: when the gateway said
	// it was serving, which tokens it minted, when each supervisor took
	// one of them and had its session accepted.
	var ready time.Time
	minted := map[string]bool{} // jtis minted since the restore
	type recovery struct{ tokenAt, sessionAt time.Time }
	rec := map[string]*recovery{}
	recovered := func() bool {
		ledger.observe(t, state, ids)
		for _, l := range readLog(t, gwLog, gwOffset) {
			switch l.Msg {
			case "gateway serving":
				ready = l.time()
			case "minted":
				minted[l.JTI] = true
			}
		}
		if ready.IsZero() {
			return false
		}
		for _, id := range ids {
			r := &recovery{}
			for _, l := range readLog(t, supLog(id), supOffset[id]) {
				switch {
				case l.Msg == "token accepted" && minted[l.JTI] && r.tokenAt.IsZero():
					r.tokenAt = l.time()
				case l.Msg == "session accepted" && r.sessionAt.IsZero():
					r.sessionAt = l.time()
				}
			}
			if r.tokenAt.IsZero() || r.sessionAt.IsZero() {
				return false
			}
			rec[id] = r
		}
		return true
	}
	waitFor(t, 20*time.Second, "every supervisor holds a token of the restored gateway, in a session", recovered,
		func() string { return fmt.Sprintf("ready %v, recovered %v, %+v", ready, len(rec), g.list()) })
	waitFor(t, 10*time.Second, "every sandbox settled", settled(g, nil),
		func() string { return fmt.Sprintf("%+v", g.list()) })

	// No generation issued twice: every mint the gateway logged, in all
	// three runs, and every token any supervisor ever took.
	for _, l := range readLog(t, gwLog, 0) {
		if l.Msg == "minted" {
			ledger.record(t, l.Sandbox, l.Gen, l.JTI, "the gateway's log")
		}
	}
	for _, id := range ids {
		for _, l := range readLog(t, supLog(id), 0) {
			if l.Msg == "token accepted" {
				ledger.record(t, id, l.Gen, l.JTI, "sandbox "+id+"'s supervisor log")
			}
		}
	}
	for _, l := range readLog(t, gwLog, gwOffset) {
		if l.Msg == "session refused" {
			t.Errorf("after the restore, the gateway refused a session of sandbox %s: %s", l.Sandbox, l.Code)
		}
	}
	for _, id := range ids {
		r := rec[id]
		at := r.tokenAt
		if r.sessionAt.After(at) {
			at = r.sessionAt
		}
		t.Logf("sandbox %s recovered %s after the gateway was ready (token %s, session %s)", id,
			at.Sub(ready).Round(time.Millisecond), r.tokenAt.Sub(ready).Round(time.Millisecond), r.sessionAt.Sub(ready).Round(time.Millisecond))
		if at.Sub(ready) > time.Second {
			t.Errorf("sandbox %s recovered %s after the gateway was ready, want within 1s", id, at.Sub(ready).Round(time.Millisecond))
		}
	}
}
