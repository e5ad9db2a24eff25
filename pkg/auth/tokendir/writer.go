package tokendir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the files the gateway writes.
const (
	TokenFile = "token"
	JWKSFile  = "jwks.json"
)

const (
	// dataLink points at the current generation; renaming over it publishes one.
	dataLink = "..data"
	// dataTmpLink is the new ..data before the rename makes it the real one.
	dataTmpLink = "..data_tmp"
	// linkTmp is a visible symlink before a rename gives it its name.
	linkTmp = "..link_tmp"
	// generationPrefix starts every generation's name, so that generations,
	// like the links above, never collide with a payload name.
	generationPrefix = ".."
	// generationLayout is a generation's name after the prefix: UTC time to
	// the nanosecond, fixed width, so names sort in time order.
	generationLayout = "2006_01_02_15_04_05.000000000"

	dirMode        fs.FileMode = 0o700
	generationMode fs.FileMode = 0o500
	fileMode       fs.FileMode = 0o400
)

// Writer publishes files into one token directory atomically. It is safe for
// concurrent use, and several Writers (in this process or others) may share
// a directory: each Write holds an exclusive flock on it.
type Writer struct {
	dir   string
	now   func() time.Time
	owner *owner

	// umaskHidesFileMode is set when the process umask, read at
	// NewWriter, takes bits of fileMode away, so each file needs a chmod.
	umaskHidesFileMode bool
	// fillNeedsWrite is set when the process, without CAP_DAC_OVERRIDE,
	// cannot fill a generation made 0500 (or the umask takes bits of
	// 0500): generations are then made 0700, filled, and closed to 0500.
	fillNeedsWrite bool

	mu sync.Mutex
	// last is what this Writer published last, so that a file whose
	// content did not change (the JWKS, between key rotations) is linked
	// into the next generation instead of written again, and the next
	// Write need not list a directory nobody changed since.
	last published
	// fs tells whether the directory's file system proves a change by
	// its change time (see fineChangeTimes), learnt once per device.
	fs fileSystem
	// listings counts the Writes that listed the directory (for tests).
	listings int
}

type fileSystem struct {
	dev   uint64
	known bool
	fine  bool
}

type owner struct{ uid, gid int }

// published is one generation this Writer wrote, and the inode of each of
// its files as the Writer left it.
type published struct {
	generation string
	files      map[string]fileStamp

	// after is the layout the Write left and dir the directory's stat
	// right after it; dirKnown is false when the stat proves nothing.
	after    layout
	names    []string // the payload's names, sorted
	dir      dirStat
	dirKnown bool
}

// fileStamp identifies a file's content as written: a file changed in
// place since (a different size or modification time) or replaced (a
// different inode) is never linked again.
type fileStamp struct {
	data    []byte
	stamped bool // ino, size and mtime are set
	ino     uint64
	size    int64
	mtime   unix.Timespec
}

// Option configures a Writer.
type Option func(*Writer)

// WithClock sets the clock that names generations (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(w *Writer) { w.now = now }
}

// WithOwner makes the Writer chown the directory, each generation and each
// file to uid:gid: the host ids of the sandbox's reader when it is not root.
// The gateway needs CAP_CHOWN for it.
func WithOwner(uid, gid int) Option {
	return func(w *Writer) { w.owner = &owner{uid: uid, gid: gid} }
}

// NewWriter returns a Writer for dir, creating dir (and its parents) 0700 if
// it is missing. It refuses a dir that is a symlink or not a directory.
func NewWriter(dir string, opts ...Option) (*Writer, error) {
	if dir == "" {
		return nil, errors.New("token dir: empty path")
	}
	w := &Writer{dir: filepath.Clean(dir), now: time.Now,
		umaskHidesFileMode: processUmask()&fileMode != 0, fillNeedsWrite: processUmask()&generationMode != 0}
	for _, opt := range opts {
		opt(w)
	}
	if err := w.ensureDir(); err != nil {
		return nil, fmt.Errorf("token dir %s: %w", w.dir, err)
	}
	return w, nil
}

// Dir returns the directory the Writer writes.
func (w *Writer) Dir() string { return w.dir }

func (w *Writer) ensureDir() error {
	err := checkDir(w.dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(w.dir, dirMode); err != nil {
			return err
		}
		// MkdirAll's mode went through the umask.
		if err := os.Chmod(w.dir, dirMode); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if w.owner != nil {
		return os.Chown(w.dir, w.owner.uid, w.owner.gid)
	}
	return nil
}

// processUmask is the process umask, read once: a gateway sets it, if at
// all, before it writes. A Writer that meets a file whose mode the umask
// changed after all chmods that file (see fillFile).
var processUmask = sync.OnceValue(readUmask)

// readUmask reads the process umask without changing it (umask(2) can
// only set it); where /proc says nothing it assumes the worst, 0777.
func readUmask() fs.FileMode {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return fs.FileMode(m)
			}
		}
	}
	return 0o777
}

// checkDir fails unless dir is a real directory (not a symlink to one).
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return errors.New("is a symlink; the token directory must be a real directory")
	case !fi.IsDir():
		return fmt.Errorf("is not a directory (%s)", describeMode(fi.Mode()))
	}
	return nil
}

// Write publishes files (name -> content) as the directory's new generation;
// see the package doc for the steps. Names are plain file names that do not
// start with a dot; contents are at most MaxFileSize bytes. Every entry of
// the directory that is not part of the layout of this write (a name a
// previous Write had and files lacks, a leftover of a crash, anything
// planted) is removed.
func (w *Writer) Write(files map[string][]byte) error {
	if err := validatePayload(files); err != nil {
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()

	fd, err := w.lock()
	if err != nil {
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	defer unix.Close(fd) // closing the descriptor releases the flock
	names := slices.Sorted(maps.Keys(files))
	listed, err := w.write(fd, files, names)
	if err != nil && !listed {
		// The Write trusted the layout it left last time and a step
		// failed: whatever changed unseen, a listing repairs it.
		w.last = published{}
		_, err = w.write(fd, files, names)
	}
	if err != nil {
		w.last = published{}
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	return nil
}

// write runs the steps of a Write on the locked directory fd. It lists the
// directory unless the layout its last Write left is proved unchanged
// (see unchangedLayout), and says whether it listed.
func (w *Writer) write(fd int, files map[string][]byte, names []string) (listed bool, err error) {
	before, ok := w.unchangedLayout(fd, names)
	if !ok {
		listed = true
		w.listings++
		if before, err = readLayout(fd, files); err != nil {
			return listed, err
		}
		if err := removeStrays(fd, before.strays); err != nil {
			return listed, err
		}
	}
	mode := generationMode // a chmod saved, where the process can fill it
	if w.fillNeedsWrite {
		mode = dirMode
	}
	gen, err := createGeneration(fd, w.now(), before.generations, mode)
	if err != nil {
		return listed, err
	}
	stamps, err := w.fillGeneration(fd, gen, mode == dirMode, before.current, names, files)
	if err != nil {
		return listed, errors.Join(err, removeEntry(fd, gen, files))
	}
	if err := swapData(fd, gen); err != nil {
		return listed, errors.Join(err, removeEntry(fd, gen, files))
	}
	w.last = published{generation: gen, files: stamps}
	// The new generation is published; what follows tidies up around it.
	if err := linkFiles(fd, names, before.links); err != nil {
		return listed, err
	}
	if err := removeOldGenerations(fd, before.generations, before.current, files); err != nil {
		return listed, err
	}
	w.recordLayout(fd, names, before, gen)
	return listed, nil
}

// unchangedLayout returns the layout the last Write left, if the
// directory's stat proves nobody changed it since: same inode, link count,
// size, mode, owner, birth, modification and change time. The change
// time is the proof, and only where the file system gives a change made
// after a stat a change time of its own (fineChangeTimes); elsewhere two
// changes in one clock tick share one and every Write lists.
//
// One change escapes it: one made after the last step of that Write and
// before its stat, by a process that does not take the flock (a sandbox
// writing its own directory under WithOwner; other Writers wait for the
// flock). That is harmless. Every step still works through *at calls that
// never follow a symlink, so what the Write does not see it cannot be
// led outside by; what is planted and left stays in a directory the
// planter could write anyway, until a later change sends a Write back to
// listing; and a step that fails on it (an entry in the way of a new name)
// makes Write start over with a listing, which repairs everything.
func (w *Writer) unchangedLayout(fd int, names []string) (layout, bool) {
	if w.fs.known && !w.fs.fine {
		return layout{}, false
	}
	st, err := statDir(fd)
	if err != nil { // no statx (before Linux 4.11, or a seccomp profile): always list
		w.fs = fileSystem{known: true}
		return layout{}, false
	}
	w.learnFileSystem(fd, st.dev)
	last := &w.last
	if !w.fs.fine || !last.dirKnown || last.dir != st || !slices.Equal(last.names, names) {
		return layout{}, false
	}
	return last.after, true
}

// recordLayout notes the layout a Write left, and the directory's stat
// right after it, for unchangedLayout.
func (w *Writer) recordLayout(fd int, names []string, before layout, gen string) {
	if !w.fs.fine {
		return
	}
	after := layout{current: gen, generations: []string{gen}, links: before.links}
	if slices.Contains(before.generations, before.current) {
		after.generations = append(after.generations, before.current)
	}
	if len(after.links) != len(names) || !allLinked(after.links, names) {
		after.links = make(map[string]string, len(names))
		for _, name := range names {
			after.links[name] = dataLink + "/" + name
		}
	}
	st, err := statDir(fd)
	if err != nil || st.dev != w.fs.dev {
		return
	}
	w.last.after, w.last.names, w.last.dir, w.last.dirKnown = after, names, st, true
}

func allLinked(links map[string]string, names []string) bool {
	for _, name := range names {
		if !isLinkTarget(links[name], name) {
			return false
		}
	}
	return true
}

// isLinkTarget tells whether target is ..data/<name>, without building it.
func isLinkTarget(target, name string) bool {
	rest, ok := strings.CutPrefix(target, dataLink+"/")
	return ok && rest == name
}

// dirStat is what a stat says of the token directory, as far as it proves
// the directory unchanged. The birth time tells a directory removed and
// made again from the one it replaced, should the new one get the old
// inode number (ext4 reuses them) and its stat match in all else.
type dirStat struct {
	dev, ino            uint64
	nlink               uint32
	mode                uint16
	uid, gid            uint32
	size                uint64
	btime, mtime, ctime unix.StatxTimestamp
}

// statDir stats the directory open at fd. Asking for the change time is
// what makes a multigrain file system give the next change a time of its
// own (see fineChangeTimes).
func statDir(fd int) (dirStat, error) {
	var x unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return dirStat{}, err
	}
	st := dirStat{
		dev: uint64(x.Dev_major)<<32 | uint64(x.Dev_minor), ino: x.Ino,
		nlink: x.Nlink, mode: x.Mode, uid: x.Uid, gid: x.Gid, size: x.Size,
		mtime: x.Mtime, ctime: x.Ctime,
	}
	if x.Mask&unix.STATX_BTIME != 0 {
		st.btime = x.Btime
	}
	return st, nil
}

// learnFileSystem finds out, once per device, whether the directory's file
// system has fine change times.
func (w *Writer) learnFileSystem(fd int, dev uint64) {
	if w.fs.known && w.fs.dev == dev {
		return
	}
	var sfs unix.Statfs_t
	w.fs = fileSystem{dev: dev, known: true, fine: unix.Fstatfs(fd, &sfs) == nil && fineChangeTimes(sfs.Type)}
}

// fineChangeTimes tells whether a file system of type fsType gives every
// change made after a stat of an inode a change time later than the one
// that stat saw, even within one tick of the coarse clock: the multigrain
// timestamps of Linux 6.13, on tmpfs, ext4, xfs and btrfs. Elsewhere a
// change time is one per clock tick (a few milliseconds) at best.
func fineChangeTimes(fsType int64) bool {
	switch uint32(fsType) {
	case unix.TMPFS_MAGIC, unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC:
		return kernelHasMultigrainTimes()
	}
	return false
}

var kernelHasMultigrainTimes = sync.OnceValue(func() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 6, 13)
})

// kernelAtLeast tells whether the kernel release (as uname gives it,
// "6.18.44-fc-v509") is major.minor or later.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i] // "13-rc1"
	}
	mnr, err2 := strconv.Atoi(digits)
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}

// lock opens the directory, refusing a symlink or anything but a directory,
// and takes an exclusive flock on it. Closing the descriptor unlocks.
func (w *Writer) lock() (int, error) {
	fd, err := unix.Open(w.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if cerr := checkDir(w.dir); cerr != nil {
			return -1, cerr
		}
		return -1, fmt.Errorf("open: %w", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("lock: %w", err)
	}
	return fd, nil
}

// layout is what a Write finds in the directory before it writes.
type layout struct {
	current     string            // target of the ..data symlink, "" if none
	generations []string          // timestamped directories
	links       map[string]string // visible symlinks of payload names: name -> target
	strays      []string          // everything else: removed before the write
}

// readLayout lists the directory and sorts its entries into the layout,
// given the names this write publishes. What it cannot place is a stray:
// a ..data or a payload name that is not a symlink, a temporary link, a
// dot name that is not a generation directory, a name not in the payload.
func readLayout(fd int, files map[string][]byte) (layout, error) {
	l := layout{links: map[string]string{}}
	entries, err := readDir(fd)
	if err != nil {
		return l, fmt.Errorf("list: %w", err)
	}
	for _, e := range entries {
		switch {
		case e.name == dataLink && e.typ == unix.DT_LNK:
			if l.current, err = readlink(fd, e.name); err != nil {
				return l, err
			}
		case isGenerationName(e.name) && e.typ == unix.DT_DIR:
			l.generations = append(l.generations, e.name)
		case isPayloadName(files, e.name) && e.typ == unix.DT_LNK:
			if l.links[e.name], err = readlink(fd, e.name); err != nil {
				return l, err
			}
		default:
			l.strays = append(l.strays, e.name)
		}
	}
	return l, nil
}

func isPayloadName(files map[string][]byte, name string) bool {
	_, ok := files[name]
	return ok
}

func isGenerationName(name string) bool {
	rest, ok := strings.CutPrefix(name, generationPrefix)
	if !ok || len(rest) != len(generationLayout) {
		return false
	}
	// Only the canonical form: names then sort in time order as strings.
	t, err := time.Parse(generationLayout, rest)
	return err == nil && t.Format(generationLayout) == rest
}

// removeStrays removes what is not part of the layout, first of all what
// would stand in the way of a rename: a real directory at ..data or at a
// payload name.
func removeStrays(fd int, strays []string) error {
	for _, name := range strays {
		if err := removeEntry(fd, name, nil); err != nil {
			return fmt.Errorf("remove stray entry: %w", err)
		}
	}
	return nil
}

// createGeneration makes the new generation's directory, named after now
// but later than every existing generation.
func createGeneration(fd int, now time.Time, existing []string, mode fs.FileMode) (string, error) {
	name := nextGenerationName(now, existing)
	if err := unix.Mkdirat(fd, name, uint32(mode)); err != nil {
		return "", fmt.Errorf("create generation %s: %w", name, err)
	}
	return name, nil
}

// nextGenerationName names a generation after now, bumped a nanosecond past
// the latest of existing (generation names, as isGenerationName accepts)
// if now is not later. Names are fixed width, so they compare as strings
// in time order and only a bump parses one.
func nextGenerationName(now time.Time, existing []string) string {
	name := generationPrefix + now.UTC().Format(generationLayout)
	latest := ""
	for _, g := range existing {
		latest = max(latest, g)
	}
	if name > latest {
		return name
	}
	prev, err := time.Parse(generationLayout, strings.TrimPrefix(latest, generationPrefix))
	if err != nil { // not a generation name: nothing to bump past
		return name
	}
	return generationPrefix + prev.Add(time.Nanosecond).Format(generationLayout)
}

// fillGeneration writes every file of gen 0400 (or links it from the
// current generation when this Writer wrote the same content there and
// nobody changed it since), then closes gen to 0500. A gen made 0500
// (writable says it is not) is filled as it is where the process may
// (CAP_DAC_OVERRIDE), else opened up first, and the Writer remembers to
// make the next ones writable. It returns the stamp of each file.
func (w *Writer) fillGeneration(fd int, gen string, writable bool, current string, names []string, files map[string][]byte) (map[string]fileStamp, error) {
	genfd, err := openDirBeneath(fd, gen)
	if err != nil {
		return nil, fmt.Errorf("open generation %s: %w", gen, err)
	}
	defer unix.Close(genfd)
	stamps := make(map[string]fileStamp, len(files))
	for _, name := range names {
		data := files[name]
		prev, seen := w.last.files[name]
		unchanged := seen && bytes.Equal(prev.data, data)
		if unchanged && prev.stamped && current != "" && current == w.last.generation &&
			linkUnchanged(fd, current, genfd, name, prev) {
			stamps[name] = prev
			continue
		}
		// A file written again with the content it had is stamped, so
		// the next write can link it; one that changes (a token) is not.
		st, err := w.writeFile(genfd, name, data, unchanged)
		if errors.Is(err, unix.EACCES) && !writable {
			w.fillNeedsWrite = true
			if err := unix.Fchmod(genfd, uint32(dirMode)); err != nil {
				return nil, fmt.Errorf("chmod generation: %w", err)
			}
			writable = true
			st, err = w.writeFile(genfd, name, data, unchanged)
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
		stamps[name] = st
	}
	if w.owner != nil {
		if err := unix.Fchown(genfd, w.owner.uid, w.owner.gid); err != nil {
			return nil, fmt.Errorf("chown generation: %w", err)
		}
	}
	if writable {
		if err := unix.Fchmod(genfd, uint32(generationMode)); err != nil {
			return nil, fmt.Errorf("chmod generation: %w", err)
		}
	}
	return stamps, nil
}

// linkUnchanged hard-links name from the generation current into the one
// open at to, and keeps the link only if it is the very file of stamp st.
// The link names its source through current, which a sandbox could have
// replaced since the listing (or since the last Write, when this one does
// not list); the check after the link is what makes that harmless:
// nothing but the Writer's own file passes it.
func linkUnchanged(fd int, current string, to int, name string, st fileStamp) bool {
	if unix.Linkat(fd, current+"/"+name, to, name, 0) != nil {
		return false
	}
	var s unix.Stat_t
	err := unix.Fstatat(to, name, &s, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && s.Mode == unix.S_IFREG|uint32(fileMode) && s.Ino == st.ino && s.Size == st.size && s.Mtim == st.mtime {
		return true
	}
	_ = unix.Unlinkat(to, name, 0)
	return false
}

func (w *Writer) writeFile(dirfd int, name string, data []byte, stamp bool) (fileStamp, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(fileMode))
	if err != nil {
		return fileStamp{}, err
	}
	st, err := w.fillFile(fd, data, stamp)
	return st, errors.Join(err, unix.Close(fd))
}

// fillFile writes data to the new file open at fd, sets its owner and
// mode, and stamps it if asked.
func (w *Writer) fillFile(fd int, data []byte, stamp bool) (fileStamp, error) {
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil && err != unix.EINTR {
			return fileStamp{}, err
		}
		rest = rest[max(n, 0):]
	}
	if w.owner != nil {
		if err := unix.Fchown(fd, w.owner.uid, w.owner.gid); err != nil {
			return fileStamp{}, err
		}
	}
	if w.umaskHidesFileMode {
		if err := unix.Fchmod(fd, uint32(fileMode)); err != nil {
			return fileStamp{}, err
		}
	}
	st := fileStamp{data: data}
	if !stamp {
		return st, nil
	}
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return fileStamp{}, err
	}
	if s.Mode&0o777 != uint32(fileMode) { // the umask changed since NewWriter
		if err := unix.Fchmod(fd, uint32(fileMode)); err != nil {
			return fileStamp{}, err
		}
		return st, nil // unstamped: the next write writes it again
	}
	st.stamped, st.ino, st.size, st.mtime = true, s.Ino, s.Size, s.Mtim
	return st, nil
}

// swapData publishes gen: the rename over ..data is atomic.
func swapData(fd int, gen string) error {
	if err := replaceSymlink(fd, gen, dataTmpLink, dataLink); err != nil {
		return fmt.Errorf("swap %s: %w", dataLink, err)
	}
	return nil
}

// replaceSymlink makes name a symlink to target through tmp and a rename,
// so name is never missing. tmp is known absent: readLayout counted it a
// stray and removeStrays removed it.
func replaceSymlink(fd int, target, tmp, name string) error {
	if err := unix.Symlinkat(target, fd, tmp); err != nil {
		return err
	}
	if err := unix.Renameat(fd, tmp, fd, name); err != nil {
		return errors.Join(err, unix.Unlinkat(fd, tmp, 0))
	}
	return nil
}

// linkFiles makes each of names a symlink to ..data/<name>.
func linkFiles(fd int, names []string, links map[string]string) error {
	for _, name := range names {
		if isLinkTarget(links[name], name) {
			continue
		}
		if err := replaceSymlink(fd, dataLink+"/"+name, linkTmp, name); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	return nil
}

// removeOldGenerations removes the generations that existed before this
// Write, except previous, the one ..data pointed at until now.
func removeOldGenerations(fd int, generations []string, previous string, files map[string][]byte) error {
	var errs []error
	for _, gen := range generations {
		if gen != previous {
			errs = append(errs, removeGenerationDir(fd, gen, files))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove old generations: %w", err)
	}
	return nil
}

// Remove deletes the whole directory, as when its sandbox is deleted. It
// waits for a concurrent Write to finish. Removing a missing directory is
// not an error; writing after Remove is.
func (w *Writer) Remove() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = published{}
	return RemoveDir(w.dir)
}

// RemoveDir deletes the token directory dir and all it holds, read-only
// generations included, under its flock, so it waits for a Write of
// another Writer to finish. It never follows a symlink planted inside. A
// missing directory is not an error.
func RemoveDir(dir string) error {
	w := &Writer{dir: filepath.Clean(dir)}
	fd, err := w.lock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove token dir %s: %w", w.dir, err)
	}
	defer unix.Close(fd)
	if err := removeContents(fd, 0); err != nil {
		return fmt.Errorf("remove token dir %s: %w", w.dir, err)
	}
	if err := os.Remove(w.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove token dir %s: %w", w.dir, err)
	}
	return nil
}

func validatePayload(files map[string][]byte) error {
	if len(files) == 0 {
		return errors.New("no files to write")
	}
	for name, data := range files {
		if err := validateName(name); err != nil {
			return err
		}
		if len(data) > MaxFileSize {
			return fmt.Errorf("file %q: %d bytes, more than the %d readers accept", name, len(data), MaxFileSize)
		}
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %q starts with a dot, reserved for the layout", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("file name %q is not a plain name", name)
	case len(name) > 255:
		return fmt.Errorf("file name %.20q... is longer than 255 bytes", name)
	}
	return nil
}
