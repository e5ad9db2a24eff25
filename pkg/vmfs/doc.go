// Package vmfs shares a sandbox's token directory with a microVM over
// virtio-fs, read-only (DESIGN.md §4, §8). The guest side (mounting the
// share by its tag) is pkg/supervisor/vminit; libkrun's share is
// krun_add_virtiofs3 with its read-only flag (package vmfs/krun); this
// package runs QEMU's: one virtiofsd per VM.
//
// # Read-only, although virtiofsd has no read-only option
//
// The virtiofsd that ships with QEMU 7.2 (/usr/lib/qemu/virtiofsd) has no
// read-only switch, and measured here, a guest that remounts the share
// read-write (`mount -o remount,rw`) writes into the host directory. A
// read-only mount in the guest is the guest's own choice, and file modes
// mean nothing to virtiofsd, which runs as root with CAP_DAC_OVERRIDE. So
// StartVirtiofsd makes the directory read-only where virtiofsd sees it:
//
//  1. A goroutine locks itself to its OS thread and moves that thread
//     alone into a new mount namespace (unshare(CLONE_NEWNS)).
//  2. It makes every mount of that namespace a slave of the host's, so
//     nothing it mounts propagates back, while the host's mounts still
//     propagate in.
//  3. It bind-mounts the shared directory onto itself and remounts the
//     bind read-only.
//  4. It starts virtiofsd from that thread: a child inherits its thread's
//     mount namespace. virtiofsd's own sandbox bind-mounts the source
//     again, which keeps the read-only flag, and pivots into it.
//  5. The goroutine ends without unlocking the thread, so the Go runtime
//     ends the thread, and the namespace lives on in virtiofsd alone. The
//     host's mount table never changes, and nothing is left to clean up
//     when virtiofsd ends, however it ends.
//
// Every write the guest attempts then fails in the host kernel with EROFS,
// whatever the guest mounts. The gateway, in the host's namespace, writes
// the directory as before, and the guest sees each write on its next read:
// virtiofsd runs with cache=none, without which the guest would keep
// reading its cached copy (TESTING.md: never with cache=always).
//
// This needs root (virtiofsd does anyway: its sandbox uses namespaces).
package vmfs
