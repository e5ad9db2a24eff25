package enginetest

import (
	"errors"
	"github.com/sandkey/sandkey/pkg/testmain"
	"sync"
	"testing"
)

// Shared is an engine that a package's tests share: it starts at the first
// test that asks for it, and the package's TestMain stops it after m.Run:
//
//	var docker = enginetest.NewShared(enginetest.LaunchDocker)
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := docker.Stop(); err != nil { ... }
//		os.Exit(code)
//	}
type Shared struct {
	launch func() (*Engine, error)

	once   sync.Once
	engine *Engine
	err    error
}

// NewShared returns a Shared that starts its engine with launch
// (LaunchDocker or LaunchPodman) when first asked.
func NewShared(launch func() (*Engine, error)) *Shared {
	return &Shared{launch: launch}
}

// Engine returns the shared engine, starting it on the first call. When
// the engine is not installed, it skips t, or fails it under CI=true; when
// it failed to start, it fails t (and every later caller).
func (s *Shared) Engine(t testing.TB) *Engine {
	t.Helper()
	s.once.Do(func() { s.engine, s.err = s.launch() })
	if s.err != nil {
		failOrSkip(t, s.err)
	}
	return s.engine
}

// Socket returns the shared engine's API socket; see Engine.
func (s *Shared) Socket(t testing.TB) string {
	t.Helper()
	return s.Engine(t).Socket
}

// Stop stops the engine if it was started. Call it once, after every test
// that used it has ended.
func (s *Shared) Stop() error {
	s.once.Do(func() {}) // no start from now on
	if s.engine == nil {
		return nil
	}
	return s.engine.Stop()
}

// StartDocker starts a private dockerd for t alone and returns its API
// socket; it stops when t ends. See Shared for one engine per package.
func StartDocker(t testing.TB) (sock string) {
	t.Helper()
	return start(t, LaunchDocker)
}

// StartPodman starts a private podman service for t alone and returns its
// API socket; it stops when t ends.
func StartPodman(t testing.TB) (sock string) {
	t.Helper()
	return start(t, LaunchPodman)
}

func start(t testing.TB, launch func() (*Engine, error)) string {
	t.Helper()
	e, err := launch()
	if err != nil {
		failOrSkip(t, err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stop %s: %v", e.Kind, err)
		}
	})
	return e.Socket
}

// failOrSkip ends t for err: a skip when an engine is not installed on a
// developer's machine, a failure otherwise, and always under CI=true.
func failOrSkip(t testing.TB, err error) {
	t.Helper()
	var missing *MissingError
	testmain.SkipIfMissing(t, err, errors.As(err, &missing))
}
