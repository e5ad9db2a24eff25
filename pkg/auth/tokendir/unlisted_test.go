package tokendir

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// wantListings fails t unless w listed its directory want times, or, on a
// file system whose change times prove nothing (see fineChangeTimes), on
// every one of its writes.
func wantListings(t *testing.T, w *Writer, want, writes int) {
	t.Helper()
	if !w.fs.fine {
		want = writes
	}
	if w.listings != want {
		t.Errorf("%d of %d writes listed the directory, want %d (fine change times: %v)", w.listings, writes, want, w.fs.fine)
	}
}

// TestWriteListsTheDirectoryOnlyWhenItChangedSinceTheLastWrite pins the
// unlisted path: a Writer that wrote the directory last lists it again
// only after something else changed it, and then repairs what changed.
func TestWriteListsTheDirectoryOnlyWhenItChangedSinceTheLastWrite(t *testing.T) {
	w := newTestWriter(t)
	for _, tok := range []string{"t1", "t2", "t3"} {
		must(t, w.Write(payload(tok)))
	}
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	wantListings(t, w, 1, 3)

	writeFile(t, filepath.Join(w.Dir(), "stray"), "x")
	must(t, w.Write(payload("t4")))
	wantListings(t, w, 2, 4)
	checkLayout(t, w.Dir(), TokenFile, JWKSFile) // the stray is gone
	if got, err := ReadToken(w.Dir()); err != nil || string(got) != "t4" {
		t.Errorf("ReadToken = %q, %v; want t4", got, err)
	}

	// A change undone leaves the directory as it was, but not its stat.
	writeFile(t, filepath.Join(w.Dir(), "stray"), "x")
	must(t, os.Remove(filepath.Join(w.Dir(), "stray")))
	must(t, w.Write(payload("t5")))
	wantListings(t, w, 3, 5)

	// A payload with other names is listed, so the link of a name no
	// longer written is removed.
	files := payload("t6")
	delete(files, JWKSFile)
	must(t, w.Write(files))
	wantListings(t, w, 4, 6)
	checkLayout(t, w.Dir(), TokenFile)
}

// TestWriteSeesTheGenerationsOfAnotherWriterBetweenItsWrites pins that a
// Writer that did not write the directory last lists it: otherwise it
// would keep the other Writer's generation beside its own two.
func TestWriteSeesTheGenerationsOfAnotherWriterBetweenItsWrites(t *testing.T) {
	w1 := newTestWriter(t)
	w2, err := NewWriter(w1.Dir())
	must(t, err)
	must(t, w1.Write(payload("a1")))
	must(t, w1.Write(payload("a2")))
	must(t, w2.Write(payload("b1")))
	must(t, w1.Write(payload("a3")))
	wantListings(t, w1, 2, 3)
	checkLayout(t, w1.Dir(), TokenFile, JWKSFile)
	if got, err := ReadToken(w1.Dir()); err != nil || string(got) != "a3" {
		t.Errorf("ReadToken = %q, %v; want a3", got, err)
	}
}

// TestWriteStartsOverWithAListingWhenAnUnlistedStepFails pins the fallback
// of a change the directory's stat missed (one racing the end of the last
// Write): the stat is taken again after the change, as if it had raced,
// and the Write that trusts it still succeeds and repairs the directory.
func TestWriteStartsOverWithAListingWhenAnUnlistedStepFails(t *testing.T) {
	w := newTestWriter(t)
	must(t, w.Write(payload("t1")))
	must(t, w.Write(payload("t2")))
	hostileTree(t, filepath.Join(w.Dir(), dataTmpLink)) // in the way of the swap
	restamp(t, w)

	must(t, w.Write(payload("t3")))
	wantListings(t, w, 2, 3)
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	if got, err := ReadToken(w.Dir()); err != nil || string(got) != "t3" {
		t.Errorf("ReadToken = %q, %v; want t3", got, err)
	}
}

// TestUnlistedWriteNeverLeavesTheDirectory pins that a Write trusting a
// stale layout still never follows what was planted: the generation it
// removes was replaced by a symlink outside, unseen.
func TestUnlistedWriteNeverLeavesTheDirectory(t *testing.T) {
	outside := outsideDir(t)
	w := newTestWriter(t)
	must(t, w.Write(payload("t1")))
	must(t, w.Write(payload("t2")))
	must(t, w.Write(payload("t3")))
	current, err := os.Readlink(filepath.Join(w.Dir(), dataLink))
	must(t, err)
	// The next Write removes the previous generation by name; it holds
	// a token and a jwks.json outside too.
	writeFile(t, filepath.Join(outside, TokenFile), "outside")
	writeFile(t, filepath.Join(outside, JWKSFile), "outside")
	prev := filepath.Join(w.Dir(), otherGeneration(t, w.Dir(), current))
	replaceWith(t, prev, func(t *testing.T, p string) { symlink(t, outside, p) })
	restamp(t, w)

	must(t, w.Write(payload("t4")))
	wantListings(t, w, 1, 4)
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	checkOutsideUntouched(t, outside)
	for _, name := range []string{TokenFile, JWKSFile} {
		if got, err := os.ReadFile(filepath.Join(outside, name)); err != nil || string(got) != "outside" {
			t.Errorf("outside %s = %q (%v): the Write removed or changed it", name, got, err)
		}
	}
}

// restamp records the directory's stat now as the one w's last Write
// left: what a change racing the end of that Write looks like.
func restamp(t *testing.T, w *Writer) {
	t.Helper()
	fd, err := unix.Open(w.Dir(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	w.last.dir, err = statDir(fd)
	must(t, err)
}

// TestWriteFillsGenerationsWithoutOverridingPermissions pins the Writer of
// a process without CAP_DAC_OVERRIDE: it cannot fill a generation made
// 0500, so it opens each up for the fill and closes it after. Run as root,
// the writes run in a child process as nobody.
func TestWriteFillsGenerationsWithoutOverridingPermissions(t *testing.T) {
	const writes = 4
	if os.Geteuid() != 0 {
		w := newTestWriter(t)
		for seq := range writes {
			must(t, writeStamped(w, "self", seq))
		}
		if !w.fillNeedsWrite {
			t.Error("a Writer without CAP_DAC_OVERRIDE did not learn to make generations writable")
		}
		checkLayout(t, w.Dir(), TokenFile, JWKSFile)
		return
	}
	const nobody = 65534
	// The child runs a copy of this test binary, reachable by nobody.
	root := t.TempDir()
	must(t, os.Chmod(root, 0o711))
	must(t, os.Chmod(filepath.Dir(root), 0o711))
	bin := filepath.Join(root, "tokendir.test")
	copyExecutable(t, os.Args[0], bin)
	dir := filepath.Join(root, "auth")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.Chown(dir, nobody, nobody))

	child := exec.Command(bin, "-test.run=^TestHelperProcessWriter$", "-test.count=1")
	child.Env = append(os.Environ(), helperDirEnv+"="+dir, "TOKENDIR_TEST_HELPER_WRITES="+strconv.Itoa(writes))
	child.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("writer as nobody: %v\n%s", err, out)
	}
	current := checkLayout(t, dir, TokenFile, JWKSFile) // 0500 generation, 0400 files
	for _, p := range []string{current, current + "/" + TokenFile} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dir, p), &st))
		if st.Uid != nobody {
			t.Errorf("%s owned by %d, want the child's uid %d", p, st.Uid, nobody)
		}
	}
	if got, err := ReadToken(dir); err != nil || string(got) != string(stamp("child", writes)) {
		t.Errorf("ReadToken = %q, %v; want the child's last token", got, err)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	must(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	must(t, err)
	_, err = io.Copy(dst, src)
	must(t, err)
	must(t, dst.Close())
}

func TestKernelAtLeast(t *testing.T) {
	tests := []struct {
		release string
		want    bool
	}{
		{"6.13.0", true},
		{"6.18.44-fc-v509", true},
		{"6.12.9-arch1", false},
		{"7.0.0", true},
		{"5.15.0-91-generic", false},
		{"6.13-rc1", true},
		{"6", false},
		{"", false},
		{"x.y", false},
	}
	for _, tt := range tests {
		if got := kernelAtLeast(tt.release, 6, 13); got != tt.want {
			t.Errorf("kernelAtLeast(%q, 6, 13) = %v, want %v", tt.release, got, tt.want)
		}
	}
}

// TestWriteListsEveryTimeWhereChangeTimesProveNothing pins the other side
// of fineChangeTimes: on a file system whose change times are one per
// clock tick (as the Writer found out), every Write lists.
func TestWriteListsEveryTimeWhereChangeTimesProveNothing(t *testing.T) {
	for _, fsType := range []int64{unix.NFS_SUPER_MAGIC, unix.OVERLAYFS_SUPER_MAGIC, unix.FUSE_SUPER_MAGIC, unix.V9FS_MAGIC} {
		if fineChangeTimes(fsType) {
			t.Errorf("fineChangeTimes(%#x) = true, want false", fsType)
		}
	}
	w := newTestWriter(t)
	must(t, w.Write(payload("t1")))
	w.fs.fine = false // as learnFileSystem finds it on such a file system
	for _, tok := range []string{"t2", "t3"} {
		must(t, w.Write(payload(tok)))
	}
	if w.listings != 3 {
		t.Errorf("%d of 3 writes listed the directory, want all", w.listings)
	}
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
}
