package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv, when set to a database path, makes the test binary run
// runCrashChild instead of the tests.
const crashChildEnv = "SANDKEY_STORE_CRASH_CHILD"

// crashChildLifetime bounds the child in case its parent dies without
// killing it.
const crashChildLifetime = time.Minute

// runCrashChild opens the store at path and mints generations for every
// sandbox in it, forever, printing "committed <id> <gen> <jti>" for each one
// only after NextGenerations returned, until it is killed.
func runCrashChild(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), crashChildLifetime)
	defer cancel()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	sandboxes, err := s.ListSandboxes(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ids := make([]string, len(sandboxes))
	for i, sb := range sandboxes {
		ids[i] = sb.ID
	}
	mint := testMint(time.Now())
	for ctx.Err() == nil {
		gens, err := s.NextGenerations(ctx, ids, mint)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var b strings.Builder
		for _, g := range gens {
			fmt.Fprintf(&b, "committed %s %d %s\n", g.SandboxID, g.Gen, g.JTI)
		}
		// One write per batch; os.Stdout is unbuffered.
		if _, err := os.Stdout.WriteString(b.String()); err != nil {
			return 1
		}
	}
	return 0
}

func TestCommittedGenerationsSurviveSIGKILL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		insertTestKey(t, s, testKID, KeyActive)
		for i := range 5 {
			createTestSandbox(t, s, fmt.Sprintf("crash-%d", i))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// committed[id][gen] = jti, as printed by the children.
		committed := map[string]map[uint64]string{}
		const crashes = 3
		for round := range crashes {
			n := runAndKillCrashChild(t, path, committed)
			t.Logf("round %d: child printed %d committed generations before SIGKILL", round, n)

			s, err := Open(ctx, path, Options{})
			if err != nil {
				t.Fatalf("reopen after SIGKILL: %v", err)
			}
			if err := s.Check(ctx); err != nil {
				t.Fatalf("Check after SIGKILL: %v", err)
			}
			checkGenerationHistory(t, s, committed)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// runAndKillCrashChild starts a child on path, lets it commit a while, kills
// it with SIGKILL at a random moment and records what it printed.
func runAndKillCrashChild(t *testing.T, path string, committed map[string]map[uint64]string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() { once.Do(func() { _ = cmd.Process.Signal(syscall.SIGKILL) }) }
	t.Cleanup(kill) // should the test fail before the kill

	const linesBeforeKill = 150
	lines := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var id, jti string
		var gen uint64
		if _, err := fmt.Sscanf(sc.Text(), "committed %s %d %s", &id, &gen, &jti); err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		if committed[id] == nil {
			committed[id] = map[uint64]string{}
		}
		if prev, ok := committed[id][gen]; ok {
			t.Fatalf("generation %d of %s committed twice: jti %s and %s", gen, id, prev, jti)
		}
		committed[id][gen] = jti
		lines++
		if lines == linesBeforeKill {
			// Land the kill anywhere in the next transactions.
			time.AfterFunc(time.Duration(rand.IntN(20000))*time.Microsecond, kill)
		}
	}
	// Lines printed before the kill are still read above, up to EOF.
	err = cmd.Wait()
	if lines < linesBeforeKill {
		t.Fatalf("child ended after %d lines (%v): %s", lines, err, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not SIGKILL: %s", err, stderr.String())
	}
	return lines
}

// checkGenerationHistory asserts that every sandbox's generations are
// exactly 1..latest, that each generation a child reported committed is
// there with its jti, and that only the two newest keep their token.
func checkGenerationHistory(t *testing.T, s *Store, committed map[string]map[uint64]string) {
	t.Helper()
	ctx := context.Background()
	sandboxes, err := s.ListSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sandboxes {
		rows, err := s.reader.QueryContext(ctx,
			"SELECT gen, jti FROM generations WHERE sandbox_id = ? ORDER BY gen", sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[uint64]string{}
		var want uint64 = 1
		for rows.Next() {
			var gen uint64
			var jti string
			if err := rows.Scan(&gen, &jti); err != nil {
				t.Fatal(err)
			}
			if gen != want {
				t.Errorf("sandbox %s: generation %d follows %d", sb.Name, gen, want-1)
			}
			want = gen + 1
			stored[gen] = jti
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		if want-1 != sb.LatestGen {
			t.Errorf("sandbox %s: latest_gen %d but generations end at %d", sb.Name, sb.LatestGen, want-1)
		}
		for gen, jti := range committed[sb.ID] {
			if stored[gen] != jti {
				t.Errorf("sandbox %s: committed generation %d (jti %s) stored as %q", sb.Name, gen, jti, stored[gen])
			}
		}
		if len(committed[sb.ID]) == 0 {
			t.Errorf("sandbox %s: the child committed nothing for it", sb.Name)
		}
		if printed := uint64(len(committed[sb.ID])); sb.LatestGen > printed {
			t.Logf("sandbox %s: %d generations committed but not printed before the kill", sb.Name, sb.LatestGen-printed)
		}
	}
}
