// Package tokendir writes and reads a sandbox's token directory: the
// gateway's channel for handing the newest token (and the JWKS to verify it)
// to a sandbox that sees the directory read-only.
//
// # Layout
//
// The layout is the one of the Kubernetes atomic writer:
//
//	<dir>/                                 0700, owned by the gateway
//	  ..2026_11_27_08_15_00.123456789/     one generation, 0500
//	      token                            0400
//	      jwks.json                        0400
//	  ..data -> ..2026_11_27_08_15_00.123456789
//	  token -> ..data/token
//	  jwks.json -> ..data/jwks.json
//
// Every symlink is relative, so the directory reads the same wherever it is
// mounted (a bind mount at /run/sandkey/auth, a virtio-fs share in a VM).
//
// # Writing
//
// [Writer.Write] publishes a new set of files in these steps, each one a
// function of writer.go. Every step works on the directory's descriptor
// with the *at system calls and never follows a symlink (beneath.go), so
// whatever is planted in the directory, a Write never reads, changes or
// removes anything outside it:
//
//  1. lock: take the Writer's mutex, open the directory (O_NOFOLLOW) and
//     flock(LOCK_EX) it, so that two goroutines or two processes never
//     interleave their steps;
//  2. readLayout: list the directory and sort each entry: the ..data
//     symlink, generation directories, the symlinks of the names this
//     Write publishes, and strays: everything else (a real file or
//     directory at ..data or at a published name, a temporary link left by
//     a crash, any other name). A Writer that wrote the directory last
//     skips the listing (and step 3) when a stat proves nobody changed the
//     directory since: see "Unlisted writes" below;
//  3. removeStrays: remove every stray, a directory with all it holds
//     (made writable first), so that nothing stands in the way of the
//     renames below: any state of the directory is repaired by the next
//     Write;
//  4. createGeneration: make a new directory named after the injected clock,
//     in UTC with nanoseconds; the name is bumped past every existing
//     generation, so names are unique and sort in write order even for two
//     writes in the same nanosecond or a clock that steps back;
//  5. fillGeneration: write every file 0400, then close the directory
//     to mode 0500 (a process that may write into a 0500 directory, with
//     CAP_DAC_OVERRIDE, makes it 0500 at once and fills it as it is). A
//     file whose content is the one this Writer wrote into the current
//     generation (the JWKS, which changes only with the keys) is
//     hard-linked from there instead of written, and the link is kept
//     only if it is the very inode the Writer left (same inode, size,
//     modification time and mode): a file changed or replaced since is
//     written afresh. (The second write of unchanged content writes and
//     stamps it; the links start from the third.)
//  6. swapData: point the temporary symlink ..data_tmp at the new generation
//     and rename it over ..data. This rename is the one atomic step: a reader
//     resolving token -> ..data/token sees either the whole old generation or
//     the whole new one, never a mix and never a partial file;
//  7. linkFiles: make sure every visible name (token, jwks.json) is a symlink
//     to ..data/<name>, creating missing ones through a temporary link and a
//     rename so they never disappear;
//  8. removeOldGenerations: remove every generation except the new one and
//     the previous one, which a reader may still be in the middle of.
//
// The directory itself is the caller's: a Write refuses a directory that
// was replaced by a symlink or a file, or removed, rather than recreate it.
//
// A reader slower than two whole writes can still find its generation gone:
// it gets ENOENT and [ReadFile] retries from the top.
//
// No file and no directory is fsynced. After a host crash every sandbox is
// resumed, and every resume mints a fresh token and writes it before the
// sandbox starts; the gateway's store, not this directory, is durable. A
// directory left torn by a crash is repaired by the next Write (stray
// temporary links and generations are removed), and a reader judges a
// token by the generation inside it, never by the directory's names.
//
// # Unlisted writes
//
// Listing the directory costs five of a Write's two dozen system calls.
// After each Write the Writer notes the layout it left and the directory's
// statx; the next Write stats the locked directory and, if nothing
// differs (inode, birth, change and modification time, link count, size,
// mode, owner) and the payload has the same names, takes that layout as
// the listing's. The change time is the proof: from Linux 6.13 tmpfs,
// ext4, xfs and btrfs give a change made after a stat a change time of its
// own (multigrain timestamps), where elsewhere every change within one
// clock tick shares one. On other file systems and kernels every Write
// lists. Another Writer's Write always shows: it takes the flock after
// this Writer's stat. A change by a process that ignores the flock (a
// sandbox writing its own directory under WithOwner) can escape, if it
// lands between the last step of a Write and its stat; it is harmless:
// every step still goes through the directory's descriptor and never
// follows a symlink, what was planted stays where its planter could have
// put it anyway until a later change brings a listing, and a step it makes
// fail (an entry where a new name goes) starts the Write over with a
// listing, which repairs everything.
//
// # Permissions and ownership
//
// The directory is 0700 and owned by the gateway, generations are 0500 and
// files 0400. The sandbox side mounts the directory read-only, so the modes
// only have to let the sandbox's reader read, never write. A supervisor
// running as root in the sandbox (the usual case: it is PID 1) reads
// through DAC override. When the reader runs under another uid, the driver
// passes [WithOwner] with the host uid and gid the sandbox's reader maps
// to (after any user-namespace mapping): the Writer then chowns the
// directory, every generation and every file it creates, so that reader
// owns what it reads, and nobody else, not even its group, gets a bit.
// Access control lists do not help here: with file mode 0400 the ACL mask
// is empty, so named ACL entries grant nothing.
//
// # Reading
//
// [ReadFile] and [ReadToken] resolve the name relative to the directory
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS): symlinks are
// followed only while they stay beneath the directory, and an absolute
// symlink or one climbing out with ".." fails with [ErrOutsideDir]. Where
// openat2 is missing (ENOSYS on kernels before 5.6, or EPERM from a seccomp
// profile that predates it) the same containment is done in user space: each
// component is opened with O_NOFOLLOW relative to its parent's descriptor,
// symlinks are read and expanded by hand, and an absolute target or a ".."
// above the directory is refused.
//
// The file is opened O_NONBLOCK, so a FIFO or a device planted in place of
// the token cannot hang the reader, and anything but a regular file is
// refused ([ErrNotRegular]). At most [MaxFileSize] bytes are read; a larger
// file is refused ([ErrTooLarge]) rather than truncated. ENOENT (a lookup
// racing the removal of an old generation) and EAGAIN (openat2 racing a
// rename) are retried a few times with a backoff of well under ten
// milliseconds in total.
//
// Readers never watch or mount a single file: a bind mount of a file pins
// the old inode and goes stale after the first rename over it.
package tokendir
