package source

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

const (
	// SharedFSPollInterval is the poll interval on FUSE and virtio-fs,
	// where no change notification ever arrives: the poll is the channel.
	SharedFSPollInterval = time.Second
	// LocalPollInterval is the poll interval elsewhere, where fsnotify
	// sees changes within a millisecond and the poll is a safety net.
	LocalPollInterval = 30 * time.Second

	// fuseMagic is statfs's f_type for FUSE, virtio-fs in a Linux guest
	// included (it is FUSE underneath).
	fuseMagic = 0x65735546
	// virtiofsMagic is what Docker Desktop's virtio-fs shares report.
	virtiofsMagic = 0x6a656a63
)

// pollInterval returns the configured interval or detects one from the
// directory's filesystem.
func (s *Source) pollInterval() time.Duration {
	if s.cfg.PollInterval > 0 {
		return s.cfg.PollInterval
	}
	interval, fsType := detectPollInterval(s.cfg.Dir)
	s.log.Info("polling the token directory", zap.String("dir", s.cfg.Dir),
		zap.String("fs", fsType), zap.Duration("interval", interval))
	return interval
}

// detectPollInterval picks the poll interval for dir's filesystem. A
// directory it cannot statfs (not mounted yet?) gets the short interval.
func detectPollInterval(dir string) (time.Duration, string) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return SharedFSPollInterval, fmt.Sprintf("unknown (%v)", err)
	}
	return pollIntervalFor(int64(st.Type))
}

func pollIntervalFor(magic int64) (time.Duration, string) {
	switch magic {
	case fuseMagic:
		return SharedFSPollInterval, "fuse"
	case virtiofsMagic:
		return SharedFSPollInterval, "virtiofs"
	}
	return LocalPollInterval, fmt.Sprintf("%#x", magic)
}

// startWatching starts an fsnotify watch on the directory, never on a file.
// Without one (inotify exhausted, directory missing) the poll carries on,
// and each poll tick tries to add the watch again.
func (s *Source) startWatching() *fsnotify.Watcher {
	if s.cfg.noWatch {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch the token directory; polling only", zap.String("dir", s.cfg.Dir), zap.Error(err))
		return nil
	}
	s.ensureWatch(w)
	return w
}

// ensureWatch adds the directory to w if it is not watched: at start, and
// after the directory was removed (which ends an inotify watch).
func (s *Source) ensureWatch(w *fsnotify.Watcher) {
	if w == nil || len(w.WatchList()) > 0 {
		return
	}
	if err := w.Add(s.cfg.Dir); err != nil {
		s.log.Debug("cannot watch the token directory yet; polling", zap.String("dir", s.cfg.Dir), zap.Error(err))
		return
	}
	s.log.Debug("watching the token directory", zap.String("dir", s.cfg.Dir))
}

// watch is the Source's goroutine: it re-reads the directory on every poll
// tick and on every change notification that concerns the token.
func (s *Source) watch(ctx context.Context, w *fsnotify.Watcher, interval time.Duration) {
	defer close(s.done)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			s.ensureWatch(w)
			s.readDir()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !concernsToken(ev) {
				continue
			}
			// One write makes several events: read once for all of them.
			drain(events)
			s.readDir()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("watching the token directory failed; polling continues", zap.String("dir", s.cfg.Dir), zap.Error(err))
		}
	}
}

// concernsToken tells the events that can change what a read returns: the
// ..data swap, and the visible names being replaced.
func concernsToken(ev fsnotify.Event) bool {
	switch filepath.Base(ev.Name) {
	case "..data", tokendir.TokenFile, tokendir.JWKSFile:
		return true
	}
	return false
}

func drain(events <-chan fsnotify.Event) {
	for {
		select {
		case <-events:
		default:
			return
		}
	}
}
