package store

import (
	"context"
	"fmt"
	"strconv"
	"testing"
)

func BenchmarkNextGenerations100(b *testing.B) { benchmarkNextGenerations(b, sqliteBackend, 100) }
func BenchmarkNextGenerations1k(b *testing.B)  { benchmarkNextGenerations(b, sqliteBackend, 1000) }
func BenchmarkNextGenerations10k(b *testing.B) { benchmarkNextGenerations(b, sqliteBackend, 10000) }

// The same on Postgres (a private server on this machine, reached over
// TCP on loopback, fsync off: the figure is the round trips, not the disk).
func BenchmarkNextGenerationsPostgres100(b *testing.B) {
	benchmarkNextGenerations(b, postgresBackend, 100)
}
func BenchmarkNextGenerationsPostgres1k(b *testing.B) {
	benchmarkNextGenerations(b, postgresBackend, 1000)
}
func BenchmarkNextGenerationsPostgres10k(b *testing.B) {
	benchmarkNextGenerations(b, postgresBackend, 10000)
}

// benchmarkNextGenerations rotates n sandboxes in one NextGenerations call
// per iteration, as the rotation sweep does, with a mint func that costs
// nothing, so the figure is the store's share of a sweep.
func benchmarkNextGenerations(b *testing.B, on backend, n int) {
	// Cancellable, like the gateway's: the driver pays for watching it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTestStore(b, on)
	ids := seedSandboxes(b, s, n)
	var jti uint64
	mint := func(id string, gen uint64) (Minted, error) {
		jti++ // mint runs inside the single write transaction: no race
		return Minted{
			JTI: strconv.FormatUint(jti, 36), KID: testKID,
			IssuedAt: testEpoch, ExpiresAt: testEpoch.Add(testTokenLifetime),
			RotateAt: testEpoch.Add(testTokenLifetime / 2),
		}, nil
	}
	b.ReportAllocs()
	for b.Loop() {
		gens, err := s.NextGenerations(ctx, ids, mint)
		if err != nil {
			b.Fatal(err)
		}
		if len(gens) != n {
			b.Fatalf("%d generations, want %d", len(gens), n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "sandboxes/s")
}

// seedSandboxes inserts n running sandboxes in one transaction (n calls to
// CreateSandbox would pay n fsyncs).
func seedSandboxes(b *testing.B, s *Store, n int) []string {
	b.Helper()
	ids := make([]string, n)
	err := s.writeTx(context.Background(), func(tx *txn) error {
		stmt, err := tx.PrepareContext(context.Background(), `INSERT INTO sandboxes (id, name, driver, state, spec, created_at, updated_at)
			VALUES (?, ?, 'process', 'running', '{}', 0, 0)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i := range ids {
			ids[i] = newSandboxID()
			if _, err := stmt.Exec(ids[i], fmt.Sprintf("bench-%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return ids
}
