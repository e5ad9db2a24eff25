package gateway

import (
	"context"
	"sync"
	"testing"
)

// Manual rotations of one sandbox racing each other (and the sweep, and
// reissues, which take no sandbox lock either) commit their generations
// in one order and write them in another. Whatever the interleaving, the
// directory and the gateway's cached token end on the store's newest
// generation: an older write never replaces a newer one.
func TestConcurrentRotationsLeaveTheNewestGenerationInTheDirectory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("contended")
	for round := range 20 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got, err := e.g.store.GetSandbox(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := e.dirToken(sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Gen() != got.LatestGen {
			t.Fatalf("round %d: the directory holds gen %d, the store's newest is %d (written %d)", round, tok.Gen(), got.LatestGen, got.WrittenGen)
		}
		if cached := e.g.cachedToken(sb.ID); cached.Gen() != got.LatestGen {
			t.Fatalf("round %d: the gateway's cached token is gen %d, the store's newest is %d", round, cached.Gen(), got.LatestGen)
		}
	}
}
