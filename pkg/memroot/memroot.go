// Package memroot keeps the roots a gateway puts its sandboxes' files
// under, token directories and socket directories, on a memory-backed
// file system where it can.
//
// Token directories live on a memory-backed file system, as the kubelet
// keeps secrets and projected tokens: no token byte reaches a disk, a
// backup or a disk image. Each sandbox's directory is <token root>/<id>.
//
// PrepareTokens, run by `gateway serve` before the gateway opens, makes
// the token root memory-backed where it can. A root the operator chose
// (--token-root) that holds anything but sandboxes' directories is first
// refused, untouched (ErrNotARoot): the steps below would empty it, make
// it 0700 and mount over it.
//
//  1. a root that is already tmpfs or ramfs is used as it is: a gateway
//     restarted after a stop finds the tmpfs it mounted before, still
//     seen by its running sandboxes' bind mounts and shares, and never
//     stacks a second one over it;
//  2. otherwise it empties the directory (tokens a previous run left on
//     disk) and mounts a tmpfs there, mode 0700, nosuid, nodev, noexec,
//     with a size limit. The mount outlives the gateway on purpose:
//     unmounting it would leave running containers and VMs with the old
//     one while the next gateway writes into a new one. A host reboot
//     empties it, and reconcile re-mints every running sandbox's token;
//  3. where mounting is not permitted (an unprivileged gateway) and the
//     root is the default one, a directory under $XDG_RUNTIME_DIR (a
//     per-user tmpfs) is used instead;
//  4. where none of this works the gateway still runs, on disk: it warns
//     at start, says so on /readyz and in the metric
//     sandkey_token_dir_memory_backed.
package memroot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// TokenDirName is the default token root's name under the state directory.
const TokenDirName = "tokens"

// SocketDirName is the default socket root's name under the state
// directory: it holds each sandbox's socket directory, <socket root>/<id>.
const SocketDirName = "sockets"

// DefaultTokenSize is the default size limit of the tmpfs mounted at
// the token root: a sandbox takes about 12 KiB there (two generations of a
// token and one JWKS, a page each), so this holds some 20,000.
const DefaultTokenSize = "256m"

// socketRootSize is the size limit of the tmpfs mounted at the socket
// root: a socket takes an inode and no data.
const socketRootSize = "1m"

// Root is a directory the gateway keeps its sandboxes' files under,
// and whether they stay in memory.
type Root struct {
	Path         string // the root; each sandbox's directory is Path/<id>
	FSType       string // the file system's name (tmpfs, ramfs, ext4, ...)
	MemoryBacked bool   // tmpfs or ramfs: nothing under it reaches a disk
	Mounted      bool   // PrepareTokens or PrepareSockets mounted the tmpfs
}

// TokenRoot is the token root of a state directory: <state>/tokens.
func TokenRoot(stateDir string) string { return filepath.Join(stateDir, TokenDirName) }

// SocketRoot is the socket root of a state directory: <state>/sockets.
func SocketRoot(stateDir string) string { return filepath.Join(stateDir, SocketDirName) }

var tmpfsSize = regexp.MustCompile(`^[1-9][0-9]*[kmg%]?$`)

// ErrNotARoot is a root the operator chose (--token-root) that is not a
// directory, or that holds anything but sandboxes' token directories:
// the gateway empties a root on disk, makes it 0700 and mounts a tmpfs on
// it, which must never befall a directory of other files (a mistyped
// --token-root /srv or /run).
var ErrNotARoot = errors.New("not usable as a root")

// sandboxDirName is the name of a sandbox's directory under a root: its
// id, 32 hex digits.
var sandboxDirName = regexp.MustCompile(`^[0-9a-f]{32}$`)

// CheckTokenSize validates a tmpfs size= value (bytes, or with a k, m,
// g or % suffix).
func CheckTokenSize(size string) error {
	if !tmpfsSize.MatchString(size) {
		return fmt.Errorf("token root size %q: want a number of bytes with an optional k, m, g or %% suffix, such as %s", size, DefaultTokenSize)
	}
	return nil
}

// rootKind is what tells a token root's preparation from a socket root's.
type rootKind struct {
	name   string // in errors: "token root"
	base   string // the default root's name under the state directory
	source string // the tmpfs's name in the mount table
	// keepFilled leaves a root on disk that holds something already,
	// rather than empty it to mount a tmpfs there.
	keepFilled bool
}

var (
	tokenRootKind  = rootKind{name: "token root", base: TokenDirName, source: "sandkey-tokens"}
	socketRootKind = rootKind{name: "socket root", base: SocketDirName, source: "sandkey-sockets", keepFilled: true}
)

// PrepareTokens makes the token root for the state directory stateDir
// memory-backed where it can (see the steps above). dir is the root the
// operator chose, "" for the default. size limits a tmpfs it mounts.
func PrepareTokens(stateDir, dir, size string) (Root, error) {
	if err := CheckTokenSize(size); err != nil {
		return Root{}, err
	}
	return prepare(tokenRootKind, stateDir, dir, size)
}

// PrepareSockets makes <stateDir>/sockets, where sandboxes' sockets
// live, memory-backed where it can, in the steps of PrepareTokens but
// for one: a socket root on disk that is not empty holds the sockets of
// running sandboxes, which see it through their mounts, and stays as it
// is. Sockets hold no secret; on a tmpfs they are made in a fraction of
// the time a disk's journal takes, which is most of a restart with
// thousands of sandboxes.
func PrepareSockets(stateDir string) (Root, error) {
	return prepare(socketRootKind, stateDir, "", socketRootSize)
}

func prepare(kind rootKind, stateDir, dir, size string) (Root, error) {
	chosen := dir != ""
	if !chosen {
		dir = filepath.Join(stateDir, kind.base)
	} else if err := checkChosenRoot(kind, dir); err != nil {
		return Root{}, err
	}
	root, err := inspectRoot(kind, dir)
	if err != nil || root.MemoryBacked {
		return root, err
	}
	if kind.keepFilled {
		if entries, err := os.ReadDir(root.Path); err != nil || len(entries) > 0 {
			return root, nil
		}
	}
	err = mountTmpfs(kind, root.Path, size)
	if err == nil {
		root, err = inspectRoot(kind, root.Path)
		root.Mounted = true
		return root, err
	}
	if !errors.Is(err, unix.EPERM) || chosen {
		return root, nil // on disk; the caller warns
	}
	if alt, ok := runtimeDirRoot(kind, stateDir); ok {
		return inspectRoot(kind, alt)
	}
	return root, nil
}

// InspectTokens creates dir 0700 if it is missing and reports its file
// system. It mounts nothing.
func InspectTokens(dir string) (Root, error) { return inspectRoot(tokenRootKind, dir) }

// InspectSockets is InspectTokens for the socket root.
func InspectSockets(dir string) (Root, error) { return inspectRoot(socketRootKind, dir) }

// checkChosenRoot refuses a root the operator named that does not exist
// as a directory of sandboxes' directories alone (ErrNotARoot); one that
// does not exist yet is made.
func checkChosenRoot(kind rootKind, dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %s %s: %w; give a new or empty directory", ErrNotARoot, kind.name, dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || !sandboxDirName.MatchString(e.Name()) {
			return fmt.Errorf("%w: %s %s holds %q, which is no sandbox's directory: the gateway would empty it, make it 0700 and mount a tmpfs on it; give a new or empty directory",
				ErrNotARoot, kind.name, dir, e.Name())
		}
	}
	return nil
}

func inspectRoot(kind rootKind, dir string) (Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Root{}, fmt.Errorf("%s %s: %w", kind.name, dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return Root{}, fmt.Errorf("create %s %s: %w", kind.name, abs, err)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return Root{}, fmt.Errorf("%s %s: %w", kind.name, abs, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(abs, &st); err != nil {
		return Root{}, fmt.Errorf("%s %s: statfs: %w", kind.name, abs, err)
	}
	root := Root{Path: abs, FSType: fsTypeName(st.Type)}
	root.MemoryBacked = st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
	return root, nil
}

// Unmount unmounts a tmpfs PrepareTokens or PrepareSockets
// mounted, for a gateway that failed to start before anything used it.
func Unmount(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// mountTmpfs empties dir, so that nothing a previous run wrote (a token)
// stays on the disk beneath the mount, and mounts a private tmpfs there.
func mountTmpfs(kind rootKind, dir, size string) error {
	if !mayMount() {
		// Checked first: emptying a directory of live tokens that then
		// stays on disk would break the running sandboxes' views of it.
		return unix.EPERM
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s %s before mounting a tmpfs: %w", kind.name, dir, err)
		}
	}
	return unix.Mount(kind.source, dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=0700,size="+size)
}

// runtimeDirRoot returns a root under $XDG_RUNTIME_DIR, one per state
// directory, when that is a memory-backed directory of this user.
func runtimeDirRoot(kind rootKind, stateDir string) (string, bool) {
	run := os.Getenv("XDG_RUNTIME_DIR")
	if run == "" || !filepath.IsAbs(run) {
		return "", false
	}
	var st unix.Statfs_t
	if unix.Statfs(run, &st) != nil || (st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC) {
		return "", false
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return "", false
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(run, "sandkey", kind.base+"-"+hex.EncodeToString(sum[:6])), true
}

func fsTypeName(magic int64) string {
	switch magic {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	}
	return fmt.Sprintf("0x%x", magic)
}

// mayMount reports whether this process has CAP_SYS_ADMIN, which mount
// requires.
func mayMount() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_ADMIN) != 0
}
