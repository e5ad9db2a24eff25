package kubetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// kubeletSysctls are the kernel settings every kubelet sets on start
// (setupKernelTunables; protectKernelDefaults only turns a difference
// into a failure): the harness records them before the first node of the
// machine starts and puts them back when the last one ends.
var kubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// hostGlobalDirs are the directories outside the scratch tree that a
// kubelet or CNI writes whatever their configuration says, deepest first.
// The last node of the machine removes those that are then empty and were
// not there before the first; every node removes its own entries in them.
var hostGlobalDirs = []string{
	"/var/lib/kubelet/device-plugins",
	"/var/lib/kubelet",
	"/var/log/containers",
	"/var/log/pods",
	"/var/lib/cni/results",
	"/var/lib/cni",
}

// hostShare is a node's share of what all the nodes of this machine
// change together: the kernel settings and the global directories. Each
// node holds a shared lock on one file while it runs; the first records
// the settings as they were, the last restores them.
type hostShare struct {
	lock *fileLock
}

func hostLockPath() string  { return filepath.Join(lockDir, "sandkey-kubetest-nodes.lock") }
func hostStatePath() string { return filepath.Join(lockDir, "sandkey-kubetest-nodes.json") }

// joinHost registers a node. The first node of the machine (it gets the
// lock exclusively) records the host's state (hostState) unless a record
// is already there (a run that died before restoring it: that record
// holds the state from before it).
func joinHost() (*hostShare, error) {
	for {
		lock, err := lockFile(hostLockPath(), lockExclusive, false)
		if err != nil {
			return nil, err
		}
		if lock == nil { // other nodes run: they recorded the settings
			if lock, err = lockFile(hostLockPath(), lockShared, true); err != nil {
				return nil, err
			}
			if _, err := os.Stat(hostStatePath()); err == nil {
				return &hostShare{lock: lock}, nil
			}
			lock.release(false) // the last of them left meanwhile: be the first
			continue
		}
		if _, err := os.Stat(hostStatePath()); errors.Is(err, os.ErrNotExist) {
			if err := recordHost(); err != nil {
				lock.release(true)
				return nil, err
			}
		}
		if err := lock.share(); err != nil {
			lock.release(false)
			return nil, err
		}
		return &hostShare{lock: lock}, nil
	}
}

// leave unregisters a node; the last one restores the host (restoreHost).
func (h *hostShare) leave() error {
	if h == nil {
		return nil
	}
	if !h.lock.tryExclusive() {
		return h.lock.release(false)
	}
	errs := []error{restoreHost()}
	errs = append(errs, h.lock.release(true))
	return errors.Join(errs...)
}

// deviceSocket is the kubelet's device-plugin socket: a fixed path, the
// same for every kubelet of the machine.
const deviceSocket = "/var/lib/kubelet/device-plugins/kubelet.sock"

// hostState is what the first node of the machine records and the last
// one restores.
type hostState struct {
	// Sysctls are the kubeletSysctls as they were (name: value).
	Sysctls map[string]string `json:"sysctls"`
	// Preexisting are the hostGlobalDirs and deviceSocket that were there
	// before (a kubelet of the machine's own): the last node leaves them.
	Preexisting []string `json:"preexisting"`
}

func recordHost() error {
	st := hostState{Sysctls: map[string]string{}}
	for _, name := range kubeletSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", name))
		if err != nil {
			continue // not on this kernel: the kubelet cannot set it either
		}
		st.Sysctls[name] = strings.TrimSpace(string(v))
	}
	for _, p := range append([]string{deviceSocket}, hostGlobalDirs...) {
		if _, err := os.Lstat(p); err == nil {
			st.Preexisting = append(st.Preexisting, p)
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(hostStatePath(), data)
}

// writeFileAtomic writes path as writeFile does, through a temporary file
// renamed over it: a node of another run reading it meanwhile sees the
// old content or the new, never a part.
func writeFileAtomic(path string, data []byte) error {
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := writeFile(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// decodeHostState reads a record of hostState, or one of the harness's
// first version (the sysctls alone, a flat object) that a run of an older
// tree may have left or be writing.
func decodeHostState(data []byte) (hostState, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return hostState{}, err
	}
	var st hostState
	if _, ok := fields["sysctls"]; ok {
		err := json.Unmarshal(data, &st)
		return st, err
	}
	err := json.Unmarshal(data, &st.Sysctls)
	return st, err
}

// restoreHost puts back the recorded kernel settings, removes the
// kubelets' device-plugin socket and the global directories they left
// empty (none of those that were there before the first node), and the
// record.
func restoreHost() error {
	data, err := os.ReadFile(hostStatePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the host settings to restore: %w", err)
	}
	st, err := decodeHostState(data)
	if err != nil {
		return fmt.Errorf("read the host settings to restore from %s: %w (put back the kernel settings it names by hand, then remove it)", hostStatePath(), err)
	}
	var errs []error
	for name, v := range st.Sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", strings.ReplaceAll(name, "/", "."), v, err))
		}
	}
	if !slices.Contains(st.Preexisting, deviceSocket) {
		errs = append(errs, removeFile(deviceSocket))
	}
	for _, dir := range hostGlobalDirs {
		if slices.Contains(st.Preexisting, dir) {
			continue
		}
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err // the record stays, for the next last node to retry
	}
	return os.Remove(hostStatePath())
}

// removeOutsideFiles removes what the node of the scratch tree dir, on
// the bridge bridge, wrote outside dir: the kubelet's /var/log/containers
// links into its pod logs, and CNI's cached results for its network and
// for the loopback of its sandboxes.
func removeOutsideFiles(dir, bridge string) error {
	var errs []error
	links, _ := os.ReadDir(containerLogLinks)
	for _, l := range links {
		path := filepath.Join(containerLogLinks, l.Name())
		if target, err := os.Readlink(path); err == nil && strings.HasPrefix(target, dir+"/") {
			errs = append(errs, removeFile(path))
		}
	}
	// <network>-<container>-<interface>; each of the network's sandboxes
	// also has one in containerd's loopback network.
	results, _ := filepath.Glob(filepath.Join(cniResults, networkName(bridge)+"-*"))
	for _, path := range results {
		var cached struct {
			ContainerID string `json:"containerId"`
		}
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &cached) == nil && cached.ContainerID != "" {
			loopback, _ := filepath.Glob(filepath.Join(cniResults, "cni-loopback-"+cached.ContainerID+"-*"))
			for _, l := range loopback {
				errs = append(errs, removeFile(l))
			}
		}
		errs = append(errs, removeFile(path))
	}
	return errors.Join(errs...)
}

const (
	// containerLogLinks is where every kubelet links its containers' logs.
	containerLogLinks = "/var/log/containers"
	// cniResults is where containerd's CNI library caches results.
	cniResults = "/var/lib/cni/results"
)

// networkName is the CNI network of the node on bridge.
func networkName(bridge string) string { return "sandkey-kubetest-" + bridge }

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
