package vminit

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/guest"
)

// DefaultShareMount is where the token directory's virtio-fs share is
// mounted, the path every sandbox sees it at (DESIGN §4).
const DefaultShareMount = guest.DefaultTokenDir

// DefaultInterface is the network interface Address is set on: the first
// virtio-net device, as the kernel names it without udev.
const DefaultInterface = "eth0"

// Config says what Setup does beyond the kernel file systems and loopback.
// The zero value mounts, brings up lo, and does nothing else.
type Config struct {
	// ShareTag is the virtio-fs tag of the token directory; empty mounts
	// no share.
	ShareTag string
	// ShareMount is where the share is mounted (default DefaultShareMount).
	ShareMount string
	// Modules are .ko paths, loaded in this order.
	Modules []string
	// Interface carries Address (default DefaultInterface).
	Interface string
	// Address is an IPv4 address with prefix length, e.g. 10.0.2.15/24;
	// empty leaves the interface alone.
	Address string
	// Gateway is the IPv4 address of the default route; needs Address.
	Gateway string
}

// NeedsInit reports whether the supervisor is the init of a machine that
// nobody set up: it is PID 1 and /proc is not mounted. In a container the
// engine has mounted /proc; on a host the supervisor is not PID 1.
func NeedsInit() bool {
	if os.Getpid() != 1 {
		return false
	}
	_, err := os.Lstat("/proc/self")
	return errors.Is(err, os.ErrNotExist)
}

// Setup does the init duties (see the package doc), in order, and stops at
// the first that fails. Steps already done (a file system mounted, a module
// loaded, a route present) are skipped, so Setup may run twice.
func Setup(cfg Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	nw, err := parseNetwork(cfg)
	if err != nil {
		return err
	}
	for _, m := range kernelMounts() {
		if err := mountOnce(m, log); err != nil {
			return err
		}
	}
	for _, path := range cfg.Modules {
		if err := loadModule(path, log); err != nil {
			return err
		}
	}
	if err := bringUpLoopback(); err != nil {
		return err
	}
	if nw != nil {
		if err := configureInterface(*nw, log); err != nil {
			return err
		}
	}
	if cfg.ShareTag != "" {
		if err := mountShare(cfg.ShareTag, cfg.shareMount(), log); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) shareMount() string {
	if c.ShareMount == "" {
		return DefaultShareMount
	}
	return c.ShareMount
}

// network is the checked form of Config's network settings.
type network struct {
	iface   string
	prefix  netip.Prefix
	gateway netip.Addr // invalid: no default route
}

// parseNetwork checks the network settings before Setup changes anything;
// it returns nil when no address is configured.
func parseNetwork(cfg Config) (*network, error) {
	if cfg.Address == "" {
		if cfg.Gateway != "" {
			return nil, fmt.Errorf("gateway %s configured without an address", cfg.Gateway)
		}
		return nil, nil
	}
	n := &network{iface: cfg.Interface}
	if n.iface == "" {
		n.iface = DefaultInterface
	}
	p, err := netip.ParsePrefix(cfg.Address)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("parse address %q: want IPv4 with prefix length, like 10.0.2.15/24", cfg.Address)
	}
	n.prefix = p
	if cfg.Gateway != "" {
		gw, err := netip.ParseAddr(cfg.Gateway)
		if err != nil || !gw.Is4() {
			return nil, fmt.Errorf("parse gateway %q: want an IPv4 address, like 10.0.2.2", cfg.Gateway)
		}
		if !p.Masked().Contains(gw) {
			return nil, fmt.Errorf("gateway %s is outside the interface's network %s", gw, p.Masked())
		}
		n.gateway = gw
	}
	return n, nil
}

// PowerOff flushes the file systems and powers the machine off; it returns
// only on failure. Run in a child PID namespace as its init, it ends that
// namespace instead (its processes are killed and the init's parent sees
// it killed by SIGINT).
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
