package kubetest

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
)

// cgroupMounts lists the mount points of every cgroup hierarchy (v1
// controllers and the v2 tree; these machines are hybrid).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list cgroup mounts: %w", err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fs := fields[sep+1]; fs == "cgroup" || fs == "cgroup2" {
			mounts = append(mounts, fields[4])
		}
	}
	return mounts, sc.Err()
}

// makeCgroupRoot makes the cgroup root in every hierarchy: the kubelet
// (cgroupsPerQOS) refuses a cgroupRoot that does not exist, and a root of
// its own keeps two nodes' kubepods trees apart. A new v1 cpuset cgroup
// starts with no CPU and no memory node; it gets its parent's.
func makeCgroupRoot(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make cgroup %s: %w", dir, err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			val, err := os.ReadFile(filepath.Join(m, file))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(dir, file), val, 0o644); err != nil {
				return fmt.Errorf("set %s of cgroup %s: %w", file, dir, err)
			}
		}
	}
	return nil
}

// cgroupDirs lists the cgroup root and every cgroup below it, in every
// hierarchy, deepest first.
func cgroupDirs(root string) ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, m := range mounts {
		filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil // a missing root, or a cgroup removed meanwhile
		})
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs, nil
}

// killCgroup sends SIGKILL, by pid, to every process in the cgroup root
// and below (a container whose shim is gone), until none is left.
func killCgroup(root string) error {
	return enginetest.KillUntilGone("processes in cgroup "+root, func() []int {
		dirs, _ := cgroupDirs(root)
		var pids []int
		for _, d := range dirs {
			data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		return pids
	})
}

// removeCgroup removes the cgroup root and every cgroup below it, in every
// hierarchy; they must hold no process.
func removeCgroup(root string) error {
	dirs, err := cgroupDirs(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
