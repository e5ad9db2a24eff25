package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNextGenerationsCountsUpFromOnePerSandbox(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		a, b := createTestSandbox(t, s, "a"), createTestSandbox(t, s, "b")
		mint := testMint(testEpoch)

		for want := uint64(1); want <= 3; want++ {
			gens, err := s.NextGenerations(ctx, []string{a.ID}, mint)
			if err != nil {
				t.Fatal(err)
			}
			if len(gens) != 1 || gens[0].Gen != want || gens[0].SandboxID != a.ID {
				t.Fatalf("round %d: %+v", want, gens)
			}
		}
		gens, err := s.NextGenerations(ctx, []string{b.ID, a.ID}, mint)
		if err != nil {
			t.Fatal(err)
		}
		if len(gens) != 2 || gens[0].SandboxID != b.ID || gens[0].Gen != 1 ||
			gens[1].SandboxID != a.ID || gens[1].Gen != 4 {
			t.Fatalf("NextGenerations(b, a) = %+v, want b:1 then a:4", gens)
		}

		latest, err := s.LatestGeneration(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := gens[1]
		if latest.Gen != 4 || latest.JTI != want.JTI ||
			!latest.ExpiresAt.Equal(want.ExpiresAt) || !latest.RotateAt.Equal(want.RotateAt) ||
			!latest.IssuedAt.Equal(testEpoch) || latest.KID != testKID {
			t.Errorf("LatestGeneration = %+v, want %+v", latest, want)
		}
		sb, err := s.GetSandbox(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if sb.LatestGen != 4 || !sb.RotateAt.Equal(want.RotateAt) {
			t.Errorf("sandbox row: latest %d, rotate at %v; want 4, %v", sb.LatestGen, sb.RotateAt, want.RotateAt)
		}
	})
}

// A store of schema 4 or older kept the raw token of each sandbox's two newest
// generations. Migrating it drops them, metadata intact; on SQLite no
// byte of them is left in the file.
func TestMigrationDropsTheRawTokensOfSchema4(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s := openAt(t, path, Options{})
		insertTestKey(t, s, testKID, KeyActive)
		sb := createTestSandbox(t, s, "a")
		for range 3 {
			if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch)); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		// Take the store back to schema 4 (the last that kept raw tokens),
		// raw tokens in the two newest rows.
		const raw = "eyJhbGciOiJFZERTQSJ9.raw-token-of-schema-4"
		rawExec(t, path, "ALTER TABLE generations ADD COLUMN token TEXT")
		rawExec(t, path, "CREATE INDEX generations_with_token ON generations (sandbox_id, gen) WHERE token IS NOT NULL")
		rawExec(t, path, "UPDATE generations SET token = '"+raw+"-' || CAST(gen AS TEXT) WHERE gen >= 2")
		undoReplicasMigration(t, path)
		rawExec(t, path, "DELETE FROM schema_migrations WHERE version > 4")

		s = openAt(t, path, Options{})
		if v, _ := s.SchemaVersion(ctx); v != latestMigration(s.dialect) {
			t.Fatalf("schema version %d, want %d", v, latestMigration(s.dialect))
		}
		if _, err := s.reader.QueryContext(ctx, "SELECT token FROM generations"); err == nil {
			t.Error("generations.token still exists after the migration")
		}
		latest, err := s.LatestGeneration(ctx, sb.ID)
		if err != nil || latest.Gen != 3 || latest.JTI == "" {
			t.Fatalf("latest generation after the migration: %+v, %v; want gen 3 with its jti", latest, err)
		}
		s.Close()
		if be.name != "sqlite" {
			return // Postgres keeps dropped values in its pages until rewritten (see the migration)
		}
		for _, f := range []string{path, path + "-wal"} {
			data, err := os.ReadFile(f)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte("raw-token-of-schema-4")) {
				t.Errorf("%s still holds a raw token after the migration", f)
			}
		}
	})
}

func TestIsAcceptableAcceptsOnlyTheTwoNewestGenerations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		sb := createTestSandbox(t, s, "a")
		mint := testMint(testEpoch)
		jti := map[uint64]string{}
		for range 4 {
			gens, err := s.NextGenerations(ctx, []string{sb.ID}, mint)
			if err != nil {
				t.Fatal(err)
			}
			jti[gens[0].Gen] = gens[0].JTI
		}
		tests := []struct {
			name string
			id   string
			gen  uint64
			jti  string
			want Verdict
		}{
			{"newest", sb.ID, 4, jti[4], VerdictAccepted},
			{"previous", sb.ID, 3, jti[3], VerdictAccepted},
			{"two behind", sb.ID, 2, jti[2], VerdictSuperseded},
			{"first", sb.ID, 1, jti[1], VerdictSuperseded},
			{"newest with another jti", sb.ID, 4, jti[3], VerdictNotIssued},
			{"not minted yet", sb.ID, 5, "x", VerdictNotIssued},
			{"generation zero", sb.ID, 0, "", VerdictNotIssued},
			{"beyond int64", sb.ID, 1 << 63, "x", VerdictNotIssued},
			{"unknown sandbox", "no-such-id", 1, jti[1], VerdictUnknownSandbox},
			{"unknown sandbox, generation zero", "no-such-id", 0, "", VerdictUnknownSandbox},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.IsAcceptable(ctx, tt.id, tt.gen, tt.jti)
				if err != nil || got != tt.want {
					t.Errorf("IsAcceptable(%d) = %q, %v; want %q", tt.gen, got, err, tt.want)
				}
			})
		}
	})
}

func TestNextGenerationsSkipsMissingSandboxesAndCommitsTheRest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		a, b := createTestSandbox(t, s, "a"), createTestSandbox(t, s, "b")
		if err := s.DeleteSandbox(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		gens, err := s.NextGenerations(ctx, []string{b.ID, a.ID, "never-existed"}, testMint(testEpoch))
		var missing *MissingSandboxesError
		if !errors.As(err, &missing) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want *MissingSandboxesError wrapping ErrNotFound", err)
		}
		if fmt.Sprint(missing.IDs) != fmt.Sprint([]string{b.ID, "never-existed"}) {
			t.Errorf("missing %v", missing.IDs)
		}
		if !strings.Contains(err.Error(), b.ID) {
			t.Errorf("error %q does not name the missing sandbox", err)
		}
		if len(gens) != 1 || gens[0].SandboxID != a.ID || gens[0].Gen != 1 {
			t.Fatalf("gens = %+v, want a:1", gens)
		}
		if latest, err := s.LatestGeneration(ctx, a.ID); err != nil || latest.Gen != 1 {
			t.Errorf("a's generation was not committed: %+v, %v", latest, err)
		}
	})
}

func TestNextGenerationsMintsDuplicateIDsOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		a := createTestSandbox(t, s, "a")
		gens, err := s.NextGenerations(ctx, []string{a.ID, a.ID, a.ID}, testMint(testEpoch))
		if err != nil {
			t.Fatal(err)
		}
		if len(gens) != 1 || gens[0].Gen != 1 {
			t.Errorf("gens = %+v, want one generation 1", gens)
		}
	})
}

func TestNextGenerationsRollsBackEverythingOnFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ok := testMint(testEpoch)
		tests := []struct {
			name string
			mint func(first string) MintFunc
			want error
		}{
			{"mint error", func(first string) MintFunc {
				return func(id string, gen uint64) (Minted, error) {
					if id != first {
						return Minted{}, errors.New("signer unavailable")
					}
					return ok(id, gen)
				}
			}, nil},
			{"duplicate jti", func(string) MintFunc {
				return func(id string, gen uint64) (Minted, error) {
					m, err := ok(id, gen)
					m.JTI = "same"
					return m, err
				}
			}, ErrInvalid},
			{"unknown kid", func(first string) MintFunc {
				return func(id string, gen uint64) (Minted, error) {
					m, err := ok(id, gen)
					if id != first {
						m.KID = "no-such-key"
					}
					return m, err
				}
			}, nil},
			{"expiry before issue", func(first string) MintFunc {
				return func(id string, gen uint64) (Minted, error) {
					m, err := ok(id, gen)
					if id != first {
						m.ExpiresAt = m.IssuedAt.Add(-time.Second)
					}
					return m, err
				}
			}, ErrInvalid},
			{"no rotation point", func(first string) MintFunc {
				return func(id string, gen uint64) (Minted, error) {
					m, err := ok(id, gen)
					if id != first {
						m.RotateAt = time.Time{}
					}
					return m, err
				}
			}, ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				s := openTestStore(t, be)
				a, b := createTestSandbox(t, s, "a"), createTestSandbox(t, s, "b")
				gens, err := s.NextGenerations(ctx, []string{a.ID, b.ID}, tt.mint(a.ID))
				if err == nil || gens != nil {
					t.Fatalf("NextGenerations = %+v, %v; want an error and no generations", gens, err)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("err = %v, want %v", err, tt.want)
				}
				if !strings.Contains(err.Error(), b.ID) {
					t.Errorf("error %q does not name the sandbox", err)
				}
				for _, id := range []string{a.ID, b.ID} {
					if _, err := s.LatestGeneration(ctx, id); !errors.Is(err, ErrNoGeneration) {
						t.Errorf("sandbox %s after rollback: %v, want ErrNoGeneration", id, err)
					}
				}
				if n := queryInt(t, s.reader, "SELECT count(*) FROM generations"); n != 0 {
					t.Errorf("%d generations left after rollback", n)
				}
			})
		}
	})
}

func TestConcurrentNextGenerationsNeverRepeatAGeneration(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		var ids []string
		for i := range 4 {
			ids = append(ids, createTestSandbox(t, s, fmt.Sprintf("sb-%d", i)).ID)
		}
		const callers, rounds = 6, 15
		results := make([][]Generation, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mint := testMint(testEpoch)
				// Each caller asks for a different subset, in a different order.
				subset := []string{ids[c%len(ids)], ids[(c+1)%len(ids)], ids[(c+3)%len(ids)]}
				for range rounds {
					gens, err := s.NextGenerations(ctx, subset, mint)
					if err != nil {
						errs[c] = err
						return
					}
					results[c] = append(results[c], gens...)
				}
			}()
		}
		wg.Wait()

		seenGen := map[string]map[uint64]bool{}
		seenJTI := map[string]bool{}
		for c, gens := range results {
			if errs[c] != nil {
				t.Fatalf("caller %d: %v", c, errs[c])
			}
			last := map[string]uint64{}
			for _, g := range gens {
				if seenGen[g.SandboxID] == nil {
					seenGen[g.SandboxID] = map[uint64]bool{}
				}
				if seenGen[g.SandboxID][g.Gen] {
					t.Errorf("generation %d of %s returned twice", g.Gen, g.SandboxID)
				}
				seenGen[g.SandboxID][g.Gen] = true
				if seenJTI[g.JTI] {
					t.Errorf("jti %s returned twice", g.JTI)
				}
				seenJTI[g.JTI] = true
				if g.Gen <= last[g.SandboxID] {
					t.Errorf("caller %d saw %s go from %d to %d", c, g.SandboxID, last[g.SandboxID], g.Gen)
				}
				last[g.SandboxID] = g.Gen
			}
		}
		for _, id := range ids {
			n := uint64(len(seenGen[id]))
			for gen := uint64(1); gen <= n; gen++ {
				if !seenGen[id][gen] {
					t.Errorf("sandbox %s: generation %d missing among %d", id, gen, n)
				}
			}
			if sb, err := s.GetSandbox(ctx, id); err != nil || sb.LatestGen != n {
				t.Errorf("sandbox %s: latest %d (%v), want %d", id, sb.LatestGen, err, n)
			}
		}
	})
}

func TestRecordDeliveredAndWrittenNeverGoBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		sb := createTestSandbox(t, s, "a")
		mint := testMint(testEpoch)
		for range 3 {
			if _, err := s.NextGenerations(ctx, []string{sb.ID}, mint); err != nil {
				t.Fatal(err)
			}
		}
		steps := []struct {
			record  func(context.Context, string, uint64) error
			name    string
			gen     uint64
			wantErr error
			want    uint64
		}{
			{s.RecordDelivered, "delivered", 2, nil, 2},
			{s.RecordDelivered, "delivered", 1, nil, 2}, // a late ack of an older push
			{s.RecordDelivered, "delivered", 3, nil, 3},
			{s.RecordDelivered, "delivered", 4, ErrUnknownGeneration, 3},
			{s.RecordDelivered, "delivered", 0, ErrUnknownGeneration, 3},
			{s.RecordDelivered, "delivered", 1 << 63, ErrUnknownGeneration, 3},
			{s.RecordWritten, "written", 3, nil, 3},
			{s.RecordWritten, "written", 2, nil, 3},
			{s.RecordWritten, "written", 9, ErrUnknownGeneration, 3},
		}
		for _, st := range steps {
			err := st.record(ctx, sb.ID, st.gen)
			if !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
				t.Fatalf("record %s %d: %v, want %v", st.name, st.gen, err, st.wantErr)
			}
			got, err := s.GetSandbox(ctx, sb.ID)
			if err != nil {
				t.Fatal(err)
			}
			have := got.DeliveredGen
			if st.name == "written" {
				have = got.WrittenGen
			}
			if have != st.want {
				t.Fatalf("after record %s %d: %s gen %d, want %d", st.name, st.gen, st.name, have, st.want)
			}
		}
		gens, err := s.AcceptableGenerations(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !gens[0].Written || !gens[1].Written {
			t.Errorf("generations 3 and 2 were recorded written: %+v", gens)
		}
		if err := s.RecordDelivered(ctx, "no-such-id", 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("RecordDelivered(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestPendingDeliveriesListsSandboxesBehindTheirLatestGeneration(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		behind, current, never := createTestSandbox(t, s, "behind"), createTestSandbox(t, s, "current"), createTestSandbox(t, s, "never")
		_ = never
		mint := testMint(testEpoch)
		for range 2 {
			if _, err := s.NextGenerations(ctx, []string{behind.ID, current.ID}, mint); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordDelivered(ctx, behind.ID, 1); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordDelivered(ctx, current.ID, 2); err != nil {
			t.Fatal(err)
		}
		pending, err := s.PendingDeliveries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []PendingDelivery{{SandboxID: behind.ID, State: SandboxCreated, LatestGen: 2, DeliveredGen: 1}}
		if fmt.Sprint(pending) != fmt.Sprint(want) {
			t.Errorf("PendingDeliveries = %+v, want %+v", pending, want)
		}
	})
}

func TestDueForRotationReturnsRunningSandboxesPastTheirRotationPoint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		mk := func(name string, state SandboxState, minted bool, issued time.Time) string {
			sb := createTestSandbox(t, s, name)
			if err := s.UpdateSandboxState(ctx, sb.ID, state, "i-"+name); err != nil {
				t.Fatal(err)
			}
			if minted {
				if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(issued)); err != nil {
					t.Fatal(err)
				}
			}
			return sb.ID
		}
		now := testEpoch
		half := testTokenLifetime / 2
		early := mk("early", SandboxRunning, true, now.Add(-half-time.Minute)) // due a minute ago
		exact := mk("exact", SandboxRunning, true, now.Add(-half))             // due now
		mk("fresh", SandboxRunning, true, now.Add(-half+time.Second))          // due in a second
		mk("stopped", SandboxStopped, true, now.Add(-2*half))                  // not running
		unminted := mk("unminted", SandboxRunning, false, time.Time{})         // never got a token

		due, err := s.DueForRotation(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range due {
			ids = append(ids, d.ID)
		}
		if want := []string{unminted, early, exact}; fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("DueForRotation = %v, want %v (unminted, early, exact)", ids, want)
		}
		if !due[0].RotateAt.IsZero() || !due[2].RotateAt.Equal(now) {
			t.Errorf("rotation points = %v, want zero for the unminted sandbox and now for the exact one", due)
		}

		// Rotating them moves their rotation point into the future.
		if _, err := s.NextGenerations(ctx, ids, testMint(now)); err != nil {
			t.Fatal(err)
		}
		if due, err := s.DueForRotation(ctx, now); err != nil || len(due) != 0 {
			t.Errorf("after rotation: DueForRotation = %v, %v; want none", due, err)
		}
	})
}

func TestIssuedAfterReturnsRunningSandboxesWhoseNewestGenerationIsAhead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		mk := func(name string, state SandboxState, issued ...time.Time) string {
			sb := createTestSandbox(t, s, name)
			if err := s.UpdateSandboxState(ctx, sb.ID, state, "i-"+name); err != nil {
				t.Fatal(err)
			}
			for _, at := range issued {
				if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(at)); err != nil {
					t.Fatal(err)
				}
			}
			return sb.ID
		}
		now := testEpoch
		ahead := mk("ahead", SandboxRunning, now.Add(time.Hour))
		justAhead := mk("just-ahead", SandboxRunning, now.Add(time.Second))
		mk("at", SandboxRunning, now)                            // issued at t: not after it
		mk("caught-up", SandboxRunning, now.Add(time.Hour), now) // its newest is current
		mk("stopped", SandboxStopped, now.Add(time.Hour))        // not running
		mk("unminted", SandboxRunning)                           // no token yet
		want := []string{ahead, justAhead}
		slices.Sort(want)

		ids, err := s.IssuedAfter(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("IssuedAfter = %v, want %v (ahead and just-ahead, by id)", ids, want)
		}
	})
}

func TestPruneGenerationsKeepsTheNewestTwoAndUnexpiredOnes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		sb := createTestSandbox(t, s, "a")
		// Generations 1..5 issued an hour apart: 1..4 expired by the fifth.
		for i := range 5 {
			issued := testEpoch.Add(time.Duration(i) * testTokenLifetime)
			if _, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(issued)); err != nil {
				t.Fatal(err)
			}
		}
		now := testEpoch.Add(4*testTokenLifetime + time.Minute)
		n, err := s.PruneGenerations(ctx, now.Add(-testTokenLifetime)) // keep an hour of history
		if err != nil {
			t.Fatal(err)
		}
		// Expired before now-1h (3h01m): generations 1, 2 and 3 (expiring at
		// 1h, 2h, 3h); 4 and 5 are the newest two.
		if n != 3 {
			t.Errorf("pruned %d generations, want 3", n)
		}
		var gens []uint64
		rows, err := s.reader.QueryContext(ctx, "SELECT gen FROM generations WHERE sandbox_id = ? ORDER BY gen", sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var g uint64
			if err := rows.Scan(&g); err != nil {
				t.Fatal(err)
			}
			gens = append(gens, g)
		}
		if fmt.Sprint(gens) != "[4 5]" {
			t.Errorf("left %v, want [4 5]", gens)
		}
		// Generations keep counting from the newest.
		next, err := s.NextGenerations(ctx, []string{sb.ID}, testMint(now))
		if err != nil || next[0].Gen != 6 {
			t.Errorf("next after prune: %+v, %v; want 6", next, err)
		}
	})
}

func TestLatestGenerationErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		sb := createTestSandbox(t, s, "a")
		if _, err := s.LatestGeneration(ctx, sb.ID); !errors.Is(err, ErrNoGeneration) {
			t.Errorf("unminted: %v, want ErrNoGeneration", err)
		}
		if _, err := s.LatestGeneration(ctx, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("unknown: %v, want ErrNotFound naming the id", err)
		}
		if _, err := s.AcceptableGenerations(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("AcceptableGenerations(unknown): %v, want ErrNotFound", err)
		}
		if gens, err := s.AcceptableGenerations(ctx, sb.ID); err != nil || len(gens) != 0 {
			t.Errorf("AcceptableGenerations(unminted) = %v, %v; want none", gens, err)
		}
	})
}

// TestGenerationsStayAboveTheFloorOfAStoreRestoredFromBackup: a store
// copied at gen 3 and put back after gens 4 to 6 were issued must, once
// told of gen 6, never issue 4, 5 or 6 again.
func TestGenerationsStayAboveTheFloorOfAStoreRestoredFromBackup(t *testing.T) {
	ctx := context.Background()
	path := newTestPath(t)
	s := openAt(t, path, Options{})
	insertTestKey(t, s, testKID, KeyActive)
	sb := createTestSandbox(t, s, "a")
	mint := testMint(testEpoch)
	for range 3 {
		if _, err := s.NextGenerations(ctx, []string{sb.ID}, mint); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	var lost []Generation // issued after the backup
	for range 3 {
		gens, err := s.NextGenerations(ctx, []string{sb.ID}, mint)
		if err != nil {
			t.Fatal(err)
		}
		lost = append(lost, gens...)
	}
	s.Close()
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	if got, _ := s.GetSandbox(ctx, sb.ID); got.LatestGen != 3 {
		t.Fatalf("restored store at gen %d, want 3", got.LatestGen)
	}
	if v, _ := s.IsAcceptable(ctx, sb.ID, lost[2].Gen, lost[2].JTI); v != VerdictNotIssued {
		t.Fatalf("gen %d after the restore: %s, want %s", lost[2].Gen, v, VerdictNotIssued)
	}

	for _, tc := range []struct {
		seen uint64
		want bool
	}{{2, false}, {3, false}, {6, true}, {6, false}, {5, false}} {
		raised, err := s.RaiseGenerationFloor(ctx, sb.ID, tc.seen)
		if err != nil || raised != tc.want {
			t.Fatalf("RaiseGenerationFloor(%d) = %v, %v; want %v", tc.seen, raised, err, tc.want)
		}
	}
	s.Close()
	s = openAt(t, path, Options{}) // the floor is durable
	gens, err := s.NextGenerations(ctx, []string{sb.ID}, mint)
	if err != nil {
		t.Fatal(err)
	}
	if gens[0].Gen != 7 {
		t.Fatalf("first generation after the floor: %d, want 7", gens[0].Gen)
	}
	if v, _ := s.IsAcceptable(ctx, sb.ID, 7, gens[0].JTI); v != VerdictAccepted {
		t.Fatalf("gen 7: %s, want accepted", v)
	}
	if got, _ := s.GetSandbox(ctx, sb.ID); got.LatestGen != 7 || got.GenFloor != 6 {
		t.Fatalf("sandbox row: latest %d, floor %d; want 7, 6", got.LatestGen, got.GenFloor)
	}
	if raised, err := s.RaiseGenerationFloor(ctx, sb.ID, 7); raised || err != nil {
		t.Fatalf("floor at the counter itself: %v, %v; want a no-op", raised, err)
	}
	if _, err := s.RaiseGenerationFloor(ctx, "no-such-sandbox", 9); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown sandbox: %v, want ErrNotFound", err)
	}
}

// The floor's own rules, on both databases (the restore itself is a file
// copy, above, for SQLite): mints count on above a raised floor, and a
// floor raised while gateways rotate never lets a generation at or below
// it be issued.
func TestNextGenerationsCountOnAboveARaisedFloorWhileOthersRotate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		stores := storesOnOneDatabase(t, be, 3)
		sb := createTestSandbox(t, stores[0], "a")
		const rounds = 20
		const floor = 1000
		var wg sync.WaitGroup
		results := make([][]Generation, 2)
		errs := make([]error, 3)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mint := testMint(testEpoch)
				for range rounds {
					gens, err := stores[i].NextGenerations(ctx, []string{sb.ID}, mint)
					if err != nil {
						errs[i] = err
						return
					}
					results[i] = append(results[i], gens...)
				}
			}()
		}
		var raised bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			raised, errs[2] = stores[2].RaiseGenerationFloor(ctx, sb.ID, floor)
		}()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("store %d: %v", i, err)
			}
		}
		if !raised {
			t.Fatal("RaiseGenerationFloor(1000) moved nothing, with the counter far below")
		}
		// Each rotator sees its generations strictly increase; every
		// generation issued after the floor was raised is above it, and
		// none is issued twice.
		seen := map[uint64]bool{}
		above := 0
		for i, gens := range results {
			var last uint64
			for _, g := range gens {
				if g.Gen <= last {
					t.Errorf("store %d: generation %d after %d", i, g.Gen, last)
				}
				last = g.Gen
				if seen[g.Gen] {
					t.Errorf("generation %d issued twice", g.Gen)
				}
				seen[g.Gen] = true
				if g.Gen > floor {
					above++
				}
			}
		}
		next, err := stores[0].NextGenerations(ctx, []string{sb.ID}, testMint(testEpoch))
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(floor + above + 1); next[0].Gen != want {
			t.Errorf("next generation %d, want %d (above the floor, after the %d minted above it)", next[0].Gen, want, above)
		}
	})
}
