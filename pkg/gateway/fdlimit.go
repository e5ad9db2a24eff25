package gateway

import (
	"fmt"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Every session listener of the gateway (a sandbox's socket, a shared
// listener) holds one of its file descriptors, and the supervisor
// connected through it one more. Past the process's open-file limit
// (RLIMIT_NOFILE, which Go raises to the hard limit at start) sockets fail
// to bind at a sandbox's start and supervisors' connections are refused;
// the process collector exports the limit and the count in use
// (process_max_fds, process_open_fds). The gateway compares the limit with
// its listeners whenever it opens sandbox sockets (at start, at every
// start of a sandbox) and warns once each time it becomes too low, saying
// what to raise.
const (
	// fdsPerListener is a listener and the connection of its supervisor.
	fdsPerListener = 2
	// fdReserve is left for the rest: the store, inotify, the operator
	// API, the peers' connections, a sandbox's start in progress.
	fdReserve = 256
	// minSuggestedFDs is the least limit suggested, a common systemd one.
	minSuggestedFDs = 65536
)

// fdCheck compares the gateway's open-file limit with its listeners.
type fdCheck struct {
	log   *zap.Logger
	limit func() (uint64, error)

	mu     sync.Mutex
	short  bool // the limit was too low at the last check (and it was said)
	unread bool // the limit could not be read (and it was said)
}

func newFDCheck(log *zap.Logger) *fdCheck { return &fdCheck{log: log, limit: openFileLimit} }

// openFileLimit is the process's soft RLIMIT_NOFILE.
func openFileLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	return r.Cur, nil
}

// check compares the limit with listeners, the session listeners open.
func (c *fdCheck) check(listeners int) {
	limit, err := c.limit()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if !c.unread {
			c.log.Info("cannot read the gateway's open-file limit; not checking it", zap.Error(err))
			c.unread = true
		}
		return
	}
	c.unread = false
	need := uint64(listeners)*fdsPerListener + fdReserve
	short := need > limit
	switch {
	case short && !c.short:
		c.log.Warn("the gateway's open-file limit is too low for its sandboxes: past it sandbox sockets fail to bind "+
			"and supervisors' connections are refused; raise LimitNOFILE= in the gateway's systemd unit (or `ulimit -n` "+
			"before it starts) to at least "+fmt.Sprint(suggestLimit(int64(need), minSuggestedFDs)),
			zap.Int("listeners", listeners), zap.Uint64("limit", limit), zap.Uint64("needed", need))
	case !short && c.short:
		c.log.Info("the gateway's open-file limit is enough for its sandboxes again",
			zap.Int("listeners", listeners), zap.Uint64("limit", limit))
	}
	c.short = short
}
