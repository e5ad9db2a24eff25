// Package dirwatch shares one inotify instance among every directory a
// process watches.
//
// inotify instances are a per-user kernel resource
// (fs.inotify.max_user_instances, commonly 128), and every supervisor on
// a host runs as the same host user when its sandboxes are processes or
// containers without user namespaces of their own. A supervisor that made
// one instance per thing it watches would run the host out of them at a
// few dozen sandboxes, and those past the limit would learn of a new
// token or a restarted gateway only from a slow poll.
//
// So a process makes one [Watcher] and hands it to everything that
// watches a directory (the token source, the session's socket watch).
// Each [Watcher.Watch] follows one directory for a set of names and
// signals its channel when one of them changes; the channel holds one
// signal, so changes coalesce and the watcher never blocks. A signal says
// "look again", never what changed: the reader re-reads or re-stats.
//
// When the instance cannot be made, [New] still returns a Watcher: every
// Watch then reports itself inactive ([Watch.Active]) and never signals,
// and [Watcher.Err] says why, so callers fall back to polling at a short
// interval. A Watch whose directory does not exist yet, or was removed
// (which ends an inotify watch), is inactive too; Active adds it again
// when the directory is back.
//
// The Watcher owns one goroutine, which [Watcher.Close] stops.
package dirwatch

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Watcher is one inotify instance shared by many directory watches. It is
// safe for concurrent use.
type Watcher struct {
	log  *zap.Logger
	fs   *fsnotify.Watcher // nil when there is no inotify instance
	err  error             // why fs is nil
	done chan struct{}

	mu      sync.Mutex
	watches map[string]map[*Watch]struct{} // by cleaned directory
	closed  bool
}

// New makes the process's inotify instance. It never fails: without an
// instance the Watcher works, inactive, and Err says why. logger may be
// nil.
func New(logger *zap.Logger) *Watcher {
	if logger == nil {
		logger = zap.NewNop()
	}
	w := &Watcher{log: logger, watches: map[string]map[*Watch]struct{}{}, done: make(chan struct{})}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.err = fmt.Errorf("cannot make an inotify instance: %w", err)
		close(w.done)
		return w
	}
	w.fs = fsw
	go w.dispatch()
	return w
}

// Unavailable returns a Watcher without an inotify instance, for a
// process that knows notifications cannot work: every Watch is inactive
// and Err returns err.
func Unavailable(err error) *Watcher {
	w := &Watcher{log: zap.NewNop(), err: err, watches: map[string]map[*Watch]struct{}{}, done: make(chan struct{})}
	close(w.done)
	return w
}

// Err returns why the Watcher has no inotify instance, nil when it has
// one.
func (w *Watcher) Err() error { return w.err }

// Close stops watching; every Watch becomes inactive. It is idempotent.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	var err error
	if w.fs != nil {
		err = w.fs.Close()
	}
	<-w.done
	return err
}

// Watch follows dir for changes of the names (base names in dir) that
// match accepts; changes of dir itself (removed, renamed) are always
// signalled. The directory need not exist yet. Close the Watch when done.
func (w *Watcher) Watch(dir string, match func(name string) bool) *Watch {
	dir = filepath.Clean(dir)
	wa := &Watch{w: w, dir: dir, match: match, c: make(chan struct{}, 1)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return wa
	}
	set := w.watches[dir]
	if set == nil {
		set = map[*Watch]struct{}{}
		w.watches[dir] = set
	}
	set[wa] = struct{}{}
	w.addLocked(dir)
	return wa
}

// addLocked adds dir to the inotify instance unless it is there already.
// It reports whether dir is watched. w.mu is held.
func (w *Watcher) addLocked(dir string) bool {
	if w.fs == nil || w.closed {
		return false
	}
	if slices.Contains(w.fs.WatchList(), dir) {
		return true
	}
	if err := w.fs.Add(dir); err != nil {
		w.log.Debug("cannot watch the directory yet", zap.String("dir", dir), zap.Error(err))
		return false
	}
	return true
}

// dispatch signals the watches an event concerns, until the instance is
// closed.
func (w *Watcher) dispatch() {
	defer close(w.done)
	events, errs := w.fs.Events, w.fs.Errors
	for events != nil || errs != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.signal(ev.Name)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Events were lost (a queue overflow): everyone looks again.
			w.log.Warn("directory watch error; every watcher looks again", zap.Error(err))
			w.signalAll()
		}
	}
}

func (w *Watcher) signal(name string) {
	name = filepath.Clean(name)
	w.mu.Lock()
	defer w.mu.Unlock()
	// The directory itself (removed or renamed), then a name in it.
	for wa := range w.watches[name] {
		wa.signal()
	}
	base := filepath.Base(name)
	for wa := range w.watches[filepath.Dir(name)] {
		if wa.match == nil || wa.match(base) {
			wa.signal()
		}
	}
}

func (w *Watcher) signalAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.watches {
		for wa := range set {
			wa.signal()
		}
	}
}

// Watch is one directory followed for some names. Its methods are safe
// for concurrent use.
type Watch struct {
	w     *Watcher
	dir   string
	match func(string) bool
	c     chan struct{}
}

// C receives a signal after a matching change. It holds at most one:
// several changes before a read make one signal.
func (wa *Watch) C() <-chan struct{} { return wa.c }

// Dir returns the watched directory.
func (wa *Watch) Dir() string { return wa.dir }

// Active reports whether changes of the directory are being notified. An
// inactive Watch never signals: poll. When the directory was missing or
// removed and is there now, Active watches it again.
func (wa *Watch) Active() bool {
	wa.w.mu.Lock()
	defer wa.w.mu.Unlock()
	if _, ok := wa.w.watches[wa.dir][wa]; !ok {
		return false
	}
	return wa.w.addLocked(wa.dir)
}

// Close stops the Watch; the directory is no longer watched once no
// Watch follows it. It is idempotent.
func (wa *Watch) Close() {
	w := wa.w
	w.mu.Lock()
	defer w.mu.Unlock()
	set, ok := w.watches[wa.dir]
	if !ok {
		return
	}
	delete(set, wa)
	if len(set) > 0 {
		return
	}
	delete(w.watches, wa.dir)
	if w.fs != nil && !w.closed {
		_ = w.fs.Remove(wa.dir) // a removed directory is no longer watched anyway
	}
}

func (wa *Watch) signal() {
	select {
	case wa.c <- struct{}{}:
	default:
	}
}
