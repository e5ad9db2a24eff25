package vminit

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// bringUpLoopback sets lo up; the kernel then gives it 127.0.0.1/8.
func bringUpLoopback() error {
	fd, err := inetSocket()
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	if err := setUp(fd, "lo"); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// configureInterface sets the address and netmask of n.iface, brings it up
// and adds the default route, if any.
func configureInterface(n network, log *zap.Logger) error {
	fd, err := inetSocket()
	if err != nil {
		return fmt.Errorf("set address %s on %s: %w", n.prefix, n.iface, err)
	}
	defer unix.Close(fd)
	if err := setInet4(fd, n.iface, unix.SIOCSIFADDR, n.prefix.Addr()); err != nil {
		return fmt.Errorf("set address %s on %s: %w", n.prefix, n.iface, err)
	}
	if err := setInet4(fd, n.iface, unix.SIOCSIFNETMASK, netmask(n.prefix.Bits())); err != nil {
		return fmt.Errorf("set netmask /%d on %s: %w", n.prefix.Bits(), n.iface, err)
	}
	if err := setUp(fd, n.iface); err != nil {
		return fmt.Errorf("bring up %s: %w", n.iface, err)
	}
	log.Info("interface configured", zap.String("interface", n.iface), zap.Stringer("address", n.prefix))
	if !n.gateway.IsValid() {
		return nil
	}
	err = addDefaultRoute(fd, n.gateway)
	switch {
	case errors.Is(err, unix.EEXIST):
		log.Debug("default route present", zap.Stringer("gateway", n.gateway))
	case err != nil:
		return fmt.Errorf("add default route via %s: %w", n.gateway, err)
	default:
		log.Info("default route added", zap.Stringer("gateway", n.gateway))
	}
	return nil
}

func inetSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open socket for interface ioctls: %w", err)
	}
	return fd, nil
}

// setUp adds IFF_UP to the interface's flags.
func setUp(fd int, iface string) error {
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set flags: %w", err)
	}
	return nil
}

// setInet4 runs an ioctl that takes an interface and an IPv4 sockaddr.
func setInet4(fd int, iface string, req uint, addr netip.Addr) error {
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	a := addr.As4()
	if err := ifr.SetInet4Addr(a[:]); err != nil {
		return err
	}
	return unix.IoctlIfreq(fd, req, ifr)
}

func netmask(bits int) netip.Addr {
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// rtentry is the kernel's struct rtentry (<linux/route.h>) for SIOCADDRT.
// Go lays these field types out as C does, on 32- and 64-bit Linux.
type rtentry struct {
	pad1    uintptr
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    unsafe.Pointer
	metric  int16
	dev     *byte
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

// addDefaultRoute adds 0.0.0.0/0 via gw; the kernel picks the interface
// whose network holds gw.
func addDefaultRoute(fd int, gw netip.Addr) error {
	rt := rtentry{flags: unix.RTF_UP | unix.RTF_GATEWAY}
	rt.dst.Family = unix.AF_INET
	rt.genmask.Family = unix.AF_INET
	rt.gateway.Family = unix.AF_INET
	rt.gateway.Addr = gw.As4()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	if errno != 0 {
		return errno
	}
	return nil
}
