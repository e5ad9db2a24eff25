package source

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/dirwatch"
)

const (
	// DefaultUnwatchedPollInterval is the poll interval while the
	// directory is not watched (no inotify instance left for this user,
	// or the directory missing): a read a second is cheap, and a token
	// written while the gateway recovers is seen within it.
	DefaultUnwatchedPollInterval = time.Second
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

// watching is the directory watch of a Source and the watcher it came
// from, which the Source closes when it made it.
type watching struct {
	watch *dirwatch.Watch
	owned *dirwatch.Watcher
}

// startWatching watches the directory, never a file, through the shared
// watcher (or one of its own). Without inotify, or while the directory is
// missing, the watch is inactive and the poll runs at the short interval.
func (s *Source) startWatching() watching {
	if s.cfg.noWatch {
		return watching{}
	}
	var w watching
	dw := s.cfg.Watcher
	if dw == nil {
		dw = dirwatch.New(s.log)
		w.owned = dw
		if err := dw.Err(); err != nil {
			s.log.Warn("cannot watch the token directory; polling it", zap.String("dir", s.cfg.Dir),
				zap.Duration("interval", s.cfg.UnwatchedPollInterval), zap.Error(err))
		}
	}
	w.watch = dw.Watch(s.cfg.Dir, concernsToken)
	return w
}

func (w watching) close() {
	if w.watch != nil {
		w.watch.Close()
	}
	if w.owned != nil {
		w.owned.Close()
	}
}

// nextPoll is the delay to the next poll: interval while the directory is
// watched, the short unwatched interval while it is not.
func (s *Source) nextPoll(w watching, interval time.Duration, wasWatched *bool) time.Duration {
	watched := w.watch != nil && w.watch.Active()
	if !watched && s.cfg.noWatch {
		return interval // tests of the poll path: exactly what they asked
	}
	if watched != *wasWatched {
		*wasWatched = watched
		if watched {
			s.log.Debug("watching the token directory", zap.String("dir", s.cfg.Dir), zap.Duration("poll", interval))
		} else {
			s.log.Debug("token directory not watched; polling it", zap.String("dir", s.cfg.Dir),
				zap.Duration("interval", min(interval, s.cfg.UnwatchedPollInterval)))
		}
	}
	if watched {
		return interval
	}
	return min(interval, s.cfg.UnwatchedPollInterval)
}

// watch is the Source's goroutine: it re-reads the directory on every poll
// and whenever the watch signals a change of the token's names.
func (s *Source) watch(ctx context.Context, w watching, interval time.Duration) {
	defer close(s.done)
	defer w.close()
	var changes <-chan struct{}
	if w.watch != nil {
		changes = w.watch.C()
	}
	wasWatched := true // so that starting unwatched is logged
	timer := time.NewTimer(s.nextPoll(w, interval, &wasWatched))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			s.readDir()
			timer.Reset(s.nextPoll(w, interval, &wasWatched))
		case <-changes:
			// One write makes several events; the watch coalesced them.
			s.readDir()
		}
	}
}

// concernsToken tells the names whose change can change what a read
// returns: the ..data swap, and the visible names being replaced.
func concernsToken(name string) bool {
	switch name {
	case "..data", tokendir.TokenFile, tokendir.JWKSFile:
		return true
	}
	return false
}
