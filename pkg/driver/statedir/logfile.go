package statedir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// LogPoll is how often a followed log file is checked for new output.
const LogPoll = 200 * time.Millisecond

// OpenLog reads the log file at path from its start. Without follow the
// reader ends at the file's current end (a missing file reads as empty).
// With follow it waits for more at the end, checking every poll, until ctx
// ends; when the file is replaced (a new start renamed the old one away)
// it goes on with the new file from its start. Nothing runs in the
// background: the waiting happens in Read.
func OpenLog(ctx context.Context, path string, follow bool, poll time.Duration) (io.ReadCloser, error) {
	r := &logReader{ctx: ctx, path: path, follow: follow, poll: poll}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

type logReader struct {
	ctx    context.Context
	path   string
	follow bool
	poll   time.Duration
	f      *os.File // nil while the file does not exist
}

// open opens path, if it exists.
func (r *logReader) open() error {
	f, err := os.Open(r.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open log %s: %w", r.path, err)
	}
	r.f = f
	return nil
}

func (r *logReader) Read(p []byte) (int, error) {
	for {
		if r.f != nil {
			n, err := r.f.Read(p)
			if n > 0 || !errors.Is(err, io.EOF) {
				return n, err
			}
		}
		if !r.follow {
			return 0, io.EOF
		}
		if r.replaced() {
			if r.f != nil {
				r.f.Close()
				r.f = nil
			}
			if err := r.open(); err != nil {
				return 0, err
			}
			continue
		}
		t := time.NewTimer(r.poll)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return 0, r.ctx.Err()
		case <-t.C:
		}
	}
}

// replaced reports whether path now names another file than the one
// open (or names one at all, when none is open).
func (r *logReader) replaced() bool {
	now, err := os.Stat(r.path)
	if err != nil {
		return false
	}
	if r.f == nil {
		return true
	}
	cur, err := r.f.Stat()
	return err == nil && !os.SameFile(cur, now)
}

func (r *logReader) Close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}
