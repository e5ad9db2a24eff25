package kubetest

import (
	"sync"
	"testing"
	"time"
)

// Shared is a cluster that a package's tests share: starting one costs
// seconds, so it starts at the first test that asks for it, and the
// package's TestMain stops it after m.Run:
//
//	var cluster = kubetest.NewShared(kubetest.Options{Kubelet: true})
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := cluster.Stop(); err != nil { ... }
//		os.Exit(code)
//	}
//
// Tests sharing a cluster keep out of each other's way by working in a
// namespace of their own (Cluster.NewNamespace: a fresh name even when a
// test runs again with -count).
type Shared struct {
	opts Options

	once    sync.Once
	cluster *Cluster
	err     error
}

// NewShared returns a Shared that starts a cluster with opts when first
// asked.
func NewShared(opts Options) *Shared {
	return &Shared{opts: opts}
}

// Cluster returns the shared cluster, starting it on the first call. When
// a binary or root is missing, it skips t, or fails it under CI=true; when
// the cluster failed to start, it fails t (and every later caller).
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	s.once.Do(func() {
		begin := time.Now()
		s.cluster, s.err = Launch(s.opts)
		if s.err == nil {
			t.Logf("kubetest: shared cluster (kubelet %v) ready in %s", s.opts.Kubelet, time.Since(begin).Round(time.Millisecond))
		}
	})
	if s.err != nil {
		failOrSkip(t, s.err)
	}
	return s.cluster
}

// Stop stops the cluster if it was started. Call it once, after every
// test that used it has ended.
func (s *Shared) Stop() error {
	s.once.Do(func() {}) // no start from now on
	if s.cluster == nil {
		return nil
	}
	return s.cluster.Stop()
}
