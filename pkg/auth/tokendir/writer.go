package tokendir

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
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

	mu sync.Mutex
}

type owner struct{ uid, gid int }

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
	w := &Writer{dir: filepath.Clean(dir), now: time.Now}
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
// start with a dot; contents are at most MaxFileSize bytes. Visible names
// that a previous Write had and files lacks are removed.
func (w *Writer) Write(files map[string][]byte) error {
	if err := validatePayload(files); err != nil {
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()

	root, unlock, err := w.lock()
	if err != nil {
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	defer unlock()
	if err := w.write(root, files); err != nil {
		return fmt.Errorf("write token dir %s: %w", w.dir, err)
	}
	return nil
}

func (w *Writer) write(root *os.Root, files map[string][]byte) error {
	before, err := readLayout(root)
	if err != nil {
		return err
	}
	gen, err := createGeneration(root, w.now(), before.generations)
	if err != nil {
		return err
	}
	if err := w.fillGeneration(root, gen, files); err != nil {
		return errors.Join(err, removeGeneration(root, gen))
	}
	if err := swapData(root, gen); err != nil {
		return errors.Join(err, removeGeneration(root, gen))
	}
	// The new generation is published; what follows tidies up around it.
	if err := linkFiles(root, files, before.links); err != nil {
		return err
	}
	return removeOldGenerations(root, before.generations, before.current)
}

// lock opens the directory, checks it is still a real directory, and takes
// an exclusive flock on it. unlock releases both.
func (w *Writer) lock() (root *os.Root, unlock func(), err error) {
	if err := checkDir(w.dir); err != nil {
		return nil, nil, err
	}
	root, err = os.OpenRoot(w.dir)
	if err != nil {
		return nil, nil, err
	}
	self, err := root.Open(".")
	if err != nil {
		root.Close()
		return nil, nil, err
	}
	fd := int(self.Fd())
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		self.Close()
		root.Close()
		return nil, nil, fmt.Errorf("lock: %w", err)
	}
	return root, func() {
		// Closing the descriptor releases the flock.
		self.Close()
		root.Close()
	}, nil
}

// layout is what a Write finds in the directory before it writes.
type layout struct {
	current     string            // target of ..data, "" if none
	generations []string          // timestamped directories
	links       map[string]string // visible symlinks: name -> target
}

func readLayout(root *os.Root) (layout, error) {
	l := layout{links: map[string]string{}}
	self, err := root.Open(".")
	if err != nil {
		return l, err
	}
	entries, err := self.ReadDir(-1)
	self.Close()
	if err != nil {
		return l, fmt.Errorf("list: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == dataLink:
			if l.current, err = root.Readlink(name); err != nil {
				return l, err
			}
		case strings.HasPrefix(name, generationPrefix):
			if e.IsDir() {
				l.generations = append(l.generations, name)
			}
		case e.Type()&fs.ModeSymlink != 0:
			if l.links[name], err = root.Readlink(name); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

// createGeneration makes the new generation's directory, named after now
// but later than every existing generation.
func createGeneration(root *os.Root, now time.Time, existing []string) (string, error) {
	name := nextGenerationName(now, existing)
	if err := root.Mkdir(name, dirMode); err != nil {
		return "", fmt.Errorf("create generation: %w", err)
	}
	return name, nil
}

func nextGenerationName(now time.Time, existing []string) string {
	t := now.UTC()
	for _, name := range existing {
		prev, err := time.Parse(generationLayout, strings.TrimPrefix(name, generationPrefix))
		if err == nil && !t.After(prev) {
			t = prev.Add(time.Nanosecond)
		}
	}
	return generationPrefix + t.Format(generationLayout)
}

func (w *Writer) fillGeneration(root *os.Root, gen string, files map[string][]byte) error {
	for name, data := range files {
		if err := w.writeFile(root, gen+"/"+name, data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if w.owner != nil {
		if err := root.Chown(gen, w.owner.uid, w.owner.gid); err != nil {
			return fmt.Errorf("chown generation: %w", err)
		}
	}
	if err := root.Chmod(gen, generationMode); err != nil {
		return fmt.Errorf("chmod generation: %w", err)
	}
	return nil
}

func (w *Writer) writeFile(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(fileMode) // the create mode went through the umask
	}
	if err == nil && w.owner != nil {
		err = f.Chown(w.owner.uid, w.owner.gid)
	}
	return errors.Join(err, f.Close())
}

// swapData publishes gen: the rename over ..data is atomic.
func swapData(root *os.Root, gen string) error {
	if err := replaceSymlink(root, gen, dataTmpLink, dataLink); err != nil {
		return fmt.Errorf("swap %s: %w", dataLink, err)
	}
	return nil
}

// replaceSymlink makes name a symlink to target through tmp and a rename,
// so name is never missing.
func replaceSymlink(root *os.Root, target, tmp, name string) error {
	if err := root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := root.Symlink(target, tmp); err != nil {
		return err
	}
	return root.Rename(tmp, name)
}

// linkFiles makes each name of files a symlink to ..data/<name> and removes
// the links to ..data of names no longer written.
func linkFiles(root *os.Root, files map[string][]byte, links map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(files)) {
		target := dataLink + "/" + name
		if links[name] == target {
			continue
		}
		if err := replaceSymlink(root, target, linkTmp, name); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	for name, target := range links {
		if _, ok := files[name]; ok || target != dataLink+"/"+name {
			continue
		}
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("unlink %s: %w", name, err)
		}
	}
	return nil
}

// removeOldGenerations removes the generations that existed before this
// Write, except previous, the one ..data pointed at until now.
func removeOldGenerations(root *os.Root, generations []string, previous string) error {
	var errs []error
	for _, gen := range generations {
		if gen != previous {
			errs = append(errs, removeGeneration(root, gen))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove old generations: %w", err)
	}
	return nil
}

// removeGeneration removes one generation directory, first making it
// writable: a gateway without CAP_DAC_OVERRIDE cannot empty a 0500 directory.
func removeGeneration(root *os.Root, gen string) error {
	if err := root.Chmod(gen, dirMode); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return root.RemoveAll(gen)
}

// Remove deletes the whole directory, as when its sandbox is deleted. It
// waits for a concurrent Write to finish. Removing a missing directory is
// not an error; writing after Remove is.
func (w *Writer) Remove() error {
	w.mu.Lock()
	defer w.mu.Unlock()

	root, unlock, err := w.lock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove token dir %s: %w", w.dir, err)
	}
	defer unlock()
	l, err := readLayout(root)
	if err != nil {
		return fmt.Errorf("remove token dir %s: %w", w.dir, err)
	}
	for _, gen := range l.generations {
		if err := root.Chmod(gen, dirMode); err != nil {
			return fmt.Errorf("remove token dir %s: %w", w.dir, err)
		}
	}
	if err := os.RemoveAll(w.dir); err != nil {
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
