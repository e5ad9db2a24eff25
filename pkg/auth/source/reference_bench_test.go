package source

import (
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/transport"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

// clientGoRefresh is when client-go's cached file token source re-reads its
// file: its cache lives one minute and is renewed 10 s before the end.
const clientGoRefresh = 50 * time.Second

// BenchmarkReferenceClientGoCachedFileTokenSource is BenchmarkPropagation's
// measurement for Kubernetes client-go's NewCachedFileTokenSource reading
// the same directory's token: a reference, not a target. Each iteration
// takes about 50 s (the cache's refresh period), whatever the write's
// phase, so a run makes one sample.
func BenchmarkReferenceClientGoCachedFileTokenSource(b *testing.B) {
	f := newFixture(b)
	f.write(f.mint(100).Raw())
	ts := transport.NewCachedFileTokenSource(filepath.Join(f.dir, tokendir.TokenFile))
	if _, err := ts.Token(); err != nil { // the cache starts its period now
		b.Fatal(err)
	}
	propagation(b, f, clientGoRefresh, func(_ uint64, raw string) {
		for {
			tok, err := ts.Token()
			if err != nil {
				b.Fatal(err)
			}
			if tok.AccessToken == raw {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
}
