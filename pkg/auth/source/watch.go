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

// dirWatch watches a token directory with fsnotify (on the directory,
// never a file) and a poll, for the Source and for WatchDir.
type dirWatch struct {
	dir string
	log *zap.Logger
	w   *fsnotify.Watcher // nil: polling only
}

// startDirWatch starts an fsnotify watch on dir. Without one (inotify
// exhausted, directory missing) the poll carries on, and each poll tick
// tries to add the watch again.
func startDirWatch(dir string, log *zap.Logger, noWatch bool) *dirWatch {
	dw := &dirWatch{dir: dir, log: log}
	if noWatch {
		return dw
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("cannot watch the token directory; polling only", zap.String("dir", dir), zap.Error(err))
		return dw
	}
	dw.w = w
	dw.ensureWatch()
	return dw
}

// ensureWatch adds the directory to the watcher if it is not watched: at
// start, and after the directory was removed (which ends an inotify watch).
func (dw *dirWatch) ensureWatch() {
	if dw.w == nil || len(dw.w.WatchList()) > 0 {
		return
	}
	if err := dw.w.Add(dw.dir); err != nil {
		dw.log.Debug("cannot watch the token directory yet; polling", zap.String("dir", dw.dir), zap.Error(err))
		return
	}
	dw.log.Debug("watching the token directory", zap.String("dir", dw.dir))
}

// run calls read on every poll tick and on every change notification that
// concerns the token, until ctx ends; then it closes the watcher.
func (dw *dirWatch) run(ctx context.Context, interval time.Duration, read func()) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if dw.w != nil {
		defer dw.w.Close()
		events, errs = dw.w.Events, dw.w.Errors
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			dw.ensureWatch()
			read()
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
			read()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			dw.log.Warn("watching the token directory failed; polling continues", zap.String("dir", dw.dir), zap.Error(err))
		}
	}
}

// WatchDir calls read whenever the token in dir may have changed (an
// fsnotify event on the directory, or a poll tick every interval; 0
// detects it as Config.PollInterval does), until ctx ends. It is the
// Source's own watch, for directories whose token is not a sandkey token:
// the kubelet's projected ServiceAccount token, written with the same
// ..data swap.
func WatchDir(ctx context.Context, dir string, interval time.Duration, log *zap.Logger, read func()) {
	if log == nil {
		log = zap.NewNop()
	}
	dw := startDirWatch(dir, log, false)
	if interval <= 0 {
		interval, _ = detectPollInterval(dir)
	}
	dw.run(ctx, interval, read)
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
