package source

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/dirwatch"
	"github.com/sandkey/sandkey/pkg/dirwatch/dirwatchtest"
)

// Without an inotify instance (the host user's are spent), a new token is
// still seen within the short unwatched poll, however long PollInterval.
func TestWithoutInotifyTheDirectoryIsPolledAtTheShortInterval(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	w := dirwatch.Unavailable(errors.New("too many open files"))
	s := f.source(watchOnly, func(c *Config) { c.Watcher, c.UnwatchedPollInterval = w, 20*time.Millisecond })
	waitFor(t, "first token", func() bool { return genOf(s.Current()) == 1 })
	f.write(f.mint(2).Raw())
	waitFor(t, "the new token, found by the short poll", func() bool { return genOf(s.Current()) == 2 })
	if n := f.logs.FilterMessageSnippet("cannot watch").Len(); n != 0 {
		t.Fatalf("the source warned %d times about a watcher it was given (its maker says it once)", n)
	}
}

func TestTheDefaultUnwatchedPollIsOneSecond(t *testing.T) {
	f := newFixture(t)
	s := f.source(func(c *Config) { c.Watcher = dirwatch.Unavailable(errors.New("no inotify")) })
	if s.cfg.UnwatchedPollInterval != time.Second {
		t.Fatalf("unwatched poll interval = %s, want 1s", s.cfg.UnwatchedPollInterval)
	}
}

// A source given the process's watcher makes no inotify instance of its
// own: one per supervisor, whatever it watches.
func TestASourceGivenAWatcherMakesNoInotifyInstance(t *testing.T) {
	f := newFixture(t)
	f.write(f.mint(1).Raw())
	w := dirwatch.New(nil)
	defer w.Close()
	before := inotifyFDs(t)
	s := f.source(watchOnly, func(c *Config) { c.Watcher = w })
	if got := inotifyFDs(t) - before; got != 0 {
		t.Fatalf("the source made %d inotify instances of its own", got)
	}
	f.write(f.mint(2).Raw())
	waitFor(t, "the new token, through the shared watcher", func() bool { return genOf(s.Current()) == 2 })
}

func inotifyFDs(t *testing.T) int {
	t.Helper()
	n, err := dirwatchtest.InotifyInstances(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
