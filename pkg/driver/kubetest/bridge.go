package kubetest

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// bridgeSlots is how many node networks may exist at once on a machine:
// slot i is the bridge skk<i> with 10.88.<i>.0/24.
const bridgeSlots = 256

// lockDir holds the machine-wide lock files of the harness: a tmpfs,
// emptied at boot, as the locks are.
var lockDir = "/run"

// bridgeNet is one node's network: a Linux bridge that this harness made,
// its address (the pods' gateway, the host as pods see it) and the /24
// the pods take addresses from. The slot's lock file is held while the
// bridge exists, so that clusters running at once (two test packages) get
// different bridges, subnets and cgroups.
type bridgeNet struct {
	ipBin   string
	slot    int
	name    string // skk<slot>
	subnet  string // 10.88.<slot>.0/24
	gateway string // 10.88.<slot>.1
	lock    *fileLock
}

// takeBridgeNet takes the first free slot whose subnet no other interface
// routes, clears what a crashed run may have left in it, records dir (the
// cluster's scratch tree) in the slot's lock file, and makes the bridge
// with its address.
func takeBridgeNet(ipBin, dir string) (*bridgeNet, error) {
	for slot := range bridgeSlots {
		b, err := takeSlot(slot, ipBin, dir)
		if b != nil || err != nil {
			return b, err
		}
	}
	return nil, fmt.Errorf("no free node network: all %d bridges skk0..skk%d in use", bridgeSlots, bridgeSlots-1)
}

// takeSlot takes network slot if it is free, or returns (nil, nil).
func takeSlot(slot int, ipBin, dir string) (*bridgeNet, error) {
	_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.88.%d.0/24", slot))
	name := fmt.Sprintf("skk%d", slot)
	if routedElsewhere(subnet, name) {
		return nil, nil
	}
	lock, err := lockFile(filepath.Join(lockDir, fmt.Sprintf("sandkey-kubetest-net-%d.lock", slot)), lockExclusive, false)
	if err != nil || lock == nil { // lock == nil: another cluster's
		return nil, err
	}
	b := &bridgeNet{
		ipBin:   ipBin,
		slot:    slot,
		name:    name,
		subnet:  subnet.String(),
		gateway: fmt.Sprintf("10.88.%d.1", slot),
		lock:    lock,
	}
	if err := b.clearCrashedRun(); err != nil {
		lock.release(false)
		return nil, fmt.Errorf("clear what a crashed run left in network slot %d: %w", slot, err)
	}
	if err := lock.record(dir); err != nil {
		lock.release(true)
		return nil, err
	}
	if err := b.create(); err != nil {
		return nil, errors.Join(err, b.release())
	}
	return b, nil
}

// clearCrashedRun removes what a run that died without its teardown (a
// test binary killed by its timeout) left in the slot: the processes and
// mounts of its scratch tree, which its lock file names, the tree, the
// bridge and the cgroups. A clean teardown removes the lock file, so
// there is nothing to do after one.
func (b *bridgeNet) clearCrashedRun() error {
	var errs []error
	old, err := b.lock.recorded()
	if err != nil {
		return err
	}
	// Only a scratch tree of this harness: the file is root's, but a
	// path from it is never trusted blindly.
	if old != "" && filepath.Dir(old) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(old), scratchPrefix) {
		errs = append(errs, killCgroup(cgroupRootOf(b.name)), removeScratchTree(old), removeOutsideFiles(old, b.name))
	}
	errs = append(errs, b.removeLinks(), killCgroup(cgroupRootOf(b.name)), removeCgroup(cgroupRootOf(b.name)))
	return errors.Join(errs...)
}

// cgroupRootOf is the cgroup holding the pods of the node on bridge name.
func cgroupRootOf(bridge string) string { return "/sandkey-kubetest-" + bridge }

// bridgeMAC is the fixed, locally administered address of the bridge of
// slot: without one a Linux bridge takes the lowest address of its ports,
// so it changes when the pod whose veth had it goes, and the other pods'
// ARP entries for the gateway point at an address nobody answers for
// until they expire (about a minute).
func bridgeMAC(slot int) string { return fmt.Sprintf("02:73:6b:6b:00:%02x", slot) }

// create makes the bridge with its fixed address (bridgeMAC), gives it
// the gateway address and brings it up.
func (b *bridgeNet) create() error {
	for _, args := range [][]string{
		{"link", "add", "name", b.name, "address", bridgeMAC(b.slot), "type", "bridge"},
		{"addr", "add", b.gateway + "/24", "dev", b.name},
		{"link", "set", b.name, "up"},
	} {
		if err := b.ip(args...); err != nil {
			return fmt.Errorf("make bridge %s: %w", b.name, err)
		}
	}
	return nil
}

// release deletes the bridge and its ports, then frees the slot.
func (b *bridgeNet) release() error {
	err := b.removeLinks()
	return errors.Join(err, b.lock.release(true))
}

// removeLinks deletes the veths still attached to the bridge (a pod's
// network namespace that outlived its teardown) and the bridge itself.
func (b *bridgeNet) removeLinks() error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", b.name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", b.name, "brif"))
	var errs []error
	for _, p := range ports {
		if err := b.ip("link", "delete", p.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.ip("link", "delete", b.name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b *bridgeNet) ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, b.ipBin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// routedElsewhere reports whether an interface other than except has a
// route overlapping subnet (a podman or docker network, another lab's):
// pods must never shadow one. The default route is no overlap.
func routedElsewhere(subnet *net.IPNet, except string) bool {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[0] == except {
			continue
		}
		dst, err1 := routeIP(fields[1])
		mask, err2 := routeIP(fields[7])
		if err1 != nil || err2 != nil {
			continue
		}
		route := &net.IPNet{IP: dst, Mask: net.IPMask(mask)}
		if ones, _ := route.Mask.Size(); ones == 0 {
			continue
		}
		if route.Contains(subnet.IP) || subnet.Contains(route.IP) {
			return true
		}
	}
	return false
}

// routeIP decodes an address of /proc/net/route: 8 hex digits, host byte
// order (little-endian here).
func routeIP(s string) (net.IP, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return nil, fmt.Errorf("route address %q", s)
	}
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.LittleEndian.Uint32(b))
	return ip, nil
}
