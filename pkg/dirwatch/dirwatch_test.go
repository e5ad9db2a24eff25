package dirwatch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/dirwatch/dirwatchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// signalled waits up to a second for a signal on wa.
func signalled(wa *Watch) bool {
	select {
	case <-wa.C():
		return true
	case <-time.After(time.Second):
		return false
	}
}

// quiet reports whether wa stays silent for a short while.
func quiet(wa *Watch) bool {
	select {
	case <-wa.C():
		return false
	case <-time.After(100 * time.Millisecond):
		return true
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func only(names ...string) func(string) bool {
	return func(name string) bool {
		for _, n := range names {
			if n == name {
				return true
			}
		}
		return false
	}
}

func TestEachWatchIsSignalledForItsOwnNamesOnly(t *testing.T) {
	w := New(nil)
	defer w.Close()
	a, b := t.TempDir(), t.TempDir()
	wa := w.Watch(a, only("token"))
	defer wa.Close()
	wb := w.Watch(b, only("gw.sock"))
	defer wb.Close()
	if !wa.Active() || !wb.Active() {
		t.Fatal("watches of existing directories are inactive")
	}
	touch(t, filepath.Join(a, "other"))
	if !quiet(wa) {
		t.Fatal("a name the watch does not follow signalled it")
	}
	touch(t, filepath.Join(a, "token"))
	if !signalled(wa) {
		t.Fatal("a followed name's change did not signal its watch")
	}
	if !quiet(wb) {
		t.Fatal("a change in another directory signalled the watch")
	}
	touch(t, filepath.Join(b, "gw.sock"))
	if !signalled(wb) {
		t.Fatal("the second watch was not signalled")
	}
}

func inotifyInstances(t *testing.T) int {
	t.Helper()
	n, err := dirwatchtest.InotifyInstances(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEveryWatchSharesTheOneInotifyInstance(t *testing.T) {
	before := inotifyInstances(t)
	w := New(nil)
	defer w.Close()
	for range 10 {
		wa := w.Watch(t.TempDir(), nil)
		defer wa.Close()
		if !wa.Active() {
			t.Fatal("watch inactive")
		}
	}
	if got := inotifyInstances(t) - before; got != 1 {
		t.Fatalf("10 watches use %d inotify instances, want 1", got)
	}
}

func TestAWatchOfAMissingDirectoryStartsOnceItExists(t *testing.T) {
	w := New(nil)
	defer w.Close()
	dir := filepath.Join(t.TempDir(), "later")
	wa := w.Watch(dir, nil)
	defer wa.Close()
	if wa.Active() {
		t.Fatal("a missing directory's watch is active")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if !wa.Active() {
		t.Fatal("the watch did not start once the directory existed")
	}
	touch(t, filepath.Join(dir, "x"))
	if !signalled(wa) {
		t.Fatal("no signal after the directory appeared")
	}
}

func TestARemovedDirectorySignalsAndIsWatchedAgainWhenBack(t *testing.T) {
	w := New(nil)
	defer w.Close()
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	wa := w.Watch(dir, only("nothing"))
	defer wa.Close()
	if !wa.Active() {
		t.Fatal("inactive")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if !signalled(wa) {
		t.Fatal("removing the directory did not signal its watch")
	}
	deadline := time.Now().Add(time.Second)
	for wa.Active() {
		if time.Now().After(deadline) {
			t.Fatal("the watch of a removed directory stays active")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if !wa.Active() {
		t.Fatal("the directory is back but not watched")
	}
	touch(t, filepath.Join(dir, "nothing"))
	if !signalled(wa) {
		t.Fatal("no signal from the directory made again")
	}
}

func TestWithoutAnInstanceEveryWatchIsInactive(t *testing.T) {
	cause := errors.New("too many open files")
	w := Unavailable(cause)
	defer w.Close()
	if !errors.Is(w.Err(), cause) {
		t.Fatalf("Err() = %v, want %v", w.Err(), cause)
	}
	wa := w.Watch(t.TempDir(), nil)
	defer wa.Close()
	if wa.Active() {
		t.Fatal("a watch without inotify says it is active")
	}
}

func TestClosingTheLastWatchOfADirectoryLetsANewOneStart(t *testing.T) {
	w := New(nil)
	defer w.Close()
	dir := t.TempDir()
	first, second := w.Watch(dir, nil), w.Watch(dir, nil)
	first.Close()
	touch(t, filepath.Join(dir, "a"))
	if !signalled(second) {
		t.Fatal("closing one watch stopped the other of the same directory")
	}
	second.Close()
	third := w.Watch(dir, nil)
	defer third.Close()
	touch(t, filepath.Join(dir, "b"))
	if !signalled(third) {
		t.Fatal("a new watch of a directory whose watches were all closed is not signalled")
	}
	first.Close() // idempotent
}

func TestClosedWatcherMakesInactiveWatches(t *testing.T) {
	w := New(nil)
	wa := w.Watch(t.TempDir(), nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if wa.Active() {
		t.Fatal("a watch of a closed watcher is active")
	}
	wa.Close()
}
