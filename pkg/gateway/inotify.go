package gateway

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver"
)

// Every supervisor on this host's kernel (the drivers that bind the token
// directory: processes, containers) runs as the same host user as the
// others, and spends one inotify instance and two watches (its token
// directory, its socket's directory) of that user's kernel limits. Past
// fs.inotify.max_user_instances, supervisors fall back to polling: they
// still recover, but spend a little more CPU, and anything else of that
// user that needs inotify fails. The gateway checks the limits against
// its running sandboxes at start and at every start of a sandbox, warns
// once each time they become too low with the sysctl to run, and exports
// both as metrics.
const (
	// inotifyDir holds the host's per-user inotify limits.
	inotifyDir = "/proc/sys/fs/inotify"
	// inotifyInstancesPerSandbox and inotifyWatchesPerSandbox are what
	// one supervisor spends.
	inotifyInstancesPerSandbox = 1
	inotifyWatchesPerSandbox   = 2
	// inotifyReserve is left for the user's other programs (the container
	// engine, editors, the gateway's own libraries).
	inotifyReserve = 16
	// Suggested limits are at least these, the values many distributions
	// now ship.
	minSuggestedInstances = 1024
	minSuggestedWatches   = 65536
)

// inotifyLimits are the host's per-user inotify limits; -1 when unknown.
type inotifyLimits struct {
	instances, watches int64
}

// readInotifyLimits reads max_user_instances and max_user_watches in dir.
func readInotifyLimits(dir string) (inotifyLimits, error) {
	read := func(name string) (int64, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return -1, err
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
		}
		return n, nil
	}
	instances, err1 := read("max_user_instances")
	watches, err2 := read("max_user_watches")
	return inotifyLimits{instances: instances, watches: watches}, errors.Join(err1, err2)
}

// onHostKernel tells whether d's supervisors run on this host's kernel,
// as the host user they all share: a bind-mounted token directory says
// so; VM guests and Kubernetes pods have kernels of their own.
func onHostKernel(d driver.Driver) bool { return d.TokenDelivery() == driver.DeliveryDirBind }

// inotifyCheck follows the running sandboxes on this host's kernel and
// compares them with the host's inotify limits.
type inotifyCheck struct {
	dir string
	log *zap.Logger

	mu        sync.Mutex
	sandboxes map[string]struct{}
	limits    inotifyLimits
	short     bool // the limits were too low at the last check (and it was said)
	unread    bool // the limits could not be read (and it was said)
}

func newInotifyCheck(dir string, log *zap.Logger, reg prometheus.Registerer) *inotifyCheck {
	c := &inotifyCheck{dir: dir, log: log, sandboxes: map[string]struct{}{}, limits: inotifyLimits{-1, -1}}
	if reg != nil {
		gauge := func(name, help string, value func() int64) prometheus.Collector {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
				c.mu.Lock()
				defer c.mu.Unlock()
				return float64(value())
			})
		}
		reg.MustRegister(
			gauge("sandkey_inotify_max_user_instances", "The host's fs.inotify.max_user_instances at the last check (-1 unknown).",
				func() int64 { return c.limits.instances }),
			gauge("sandkey_inotify_max_user_watches", "The host's fs.inotify.max_user_watches at the last check (-1 unknown).",
				func() int64 { return c.limits.watches }),
			gauge("sandkey_host_kernel_sandboxes", "Running sandboxes whose supervisors share this host's per-user inotify limits (one instance, two watches each).",
				func() int64 { return int64(len(c.sandboxes)) }),
		)
	}
	return c
}

// reset replaces the sandboxes followed with ids (at start) and checks.
func (c *inotifyCheck) reset(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.sandboxes)
	for _, id := range ids {
		c.sandboxes[id] = struct{}{}
	}
	c.checkLocked()
}

// started follows a sandbox that now runs on d and checks.
func (c *inotifyCheck) started(id string, d driver.Driver) {
	if !onHostKernel(d) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sandboxes[id] = struct{}{}
	c.checkLocked()
}

// ended stops following a sandbox that stopped or was deleted.
func (c *inotifyCheck) ended(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.sandboxes[id]; !ok {
		return
	}
	delete(c.sandboxes, id)
	c.checkLocked()
}

// checkLocked re-reads the limits (an operator may have raised them) and
// says so once when they become too low for the sandboxes, and once when
// they are enough again. c.mu is held.
func (c *inotifyCheck) checkLocked() {
	limits, err := readInotifyLimits(c.dir)
	c.limits = limits
	if err != nil {
		if !c.unread {
			c.log.Info("cannot read the host's inotify limits; not checking them", zap.Error(err))
			c.unread = true
		}
		return
	}
	c.unread = false
	n := int64(len(c.sandboxes))
	needInstances := n*inotifyInstancesPerSandbox + inotifyReserve
	needWatches := n*inotifyWatchesPerSandbox + inotifyReserve
	var fixes []string
	if needInstances > limits.instances {
		fixes = append(fixes, fmt.Sprintf("sysctl -w fs.inotify.max_user_instances=%d", suggestLimit(needInstances, minSuggestedInstances)))
	}
	if needWatches > limits.watches {
		fixes = append(fixes, fmt.Sprintf("sysctl -w fs.inotify.max_user_watches=%d", suggestLimit(needWatches, minSuggestedWatches)))
	}
	short := len(fixes) > 0
	switch {
	case short && !c.short:
		c.log.Warn("the host's inotify limits are too low for its sandboxes: supervisors past them poll instead of "+
			"being notified (recovery still works, at more CPU); run `"+strings.Join(fixes, "; ")+
			"` and persist it in /etc/sysctl.d/",
			zap.Int64("sandboxes", n), zap.Int64("max_user_instances", limits.instances),
			zap.Int64("max_user_watches", limits.watches), zap.Int64("instances_needed", needInstances),
			zap.Int64("watches_needed", needWatches))
	case !short && c.short:
		c.log.Info("the host's inotify limits are enough for its sandboxes again", zap.Int64("sandboxes", n),
			zap.Int64("max_user_instances", limits.instances), zap.Int64("max_user_watches", limits.watches))
	}
	c.short = short
}

// suggestLimit is a limit for need with room to grow: twice it, rounded up
// to a power of two, and at least floor.
func suggestLimit(need, floor int64) int64 {
	return max(floor, int64(1)<<bits.Len64(uint64(2*need-1)))
}
