// Package vm is the driver that runs each sandbox as a microVM, with one of
// two backends: QEMU with virtiofsd (widely available; the one the tests
// boot, under TCG) or libkrun (the production microVM). Both give the
// guest the same things (DESIGN.md §7, §8, §10):
//
//   - the token directory as a read-only virtio-fs share, tag
//     "sandkey-auth", which the supervisor (the guest's init) mounts at
//     /run/sandkey/auth and polls every second, since change notifications
//     do not cross virtio-fs;
//   - one way to the gateway, ending at the sandbox's attested socket
//     (<SocketDir>/gw.sock): under QEMU, the restricted user network's one
//     guest forward, tcp://10.0.2.100:1024, which runs a socat per
//     connection to the socket (the cmd: form, so that gRPC can
//     reconnect); under libkrun, vsock port 1024 mapped to the socket
//     (vsock://2:1024), on a vsock device without libkrun's socket
//     impersonation (TSI), which would give the guest the host's network.
//     Only this sandbox's VM reaches that socket, so the channel stays
//     attested;
//   - the supervisor's environment (DESIGN.md §8's SANDKEY_* variables,
//     with SANDKEY_GATEWAY and SANDKEY_TOKEN_DIR for the guest) and the
//     workload's command.
//
// # The guest image
//
// A guest image is a directory that images/vm/build.sh makes: vmlinuz,
// initrd.gz (the supervisor as /init, busybox, the virtio modules),
// cmdline (the kernel parameters the image needs, its module list) and
// rootfs/ (the same tree, for libkrun). Config.Image names the default
// one; a spec's Image may name another.
//
// # QEMU
//
// Each start:
//
//  1. writes <StateDir>/initrd.img, 0600: the image's initramfs followed by
//     a small uncompressed archive holding /etc/sandkey/boot.json, the
//     supervisor's environment, arguments and stop port. The kernel
//     unpacks both. The kernel command line only gets the share's tag and
//     the guest's address: it shows in the host's process list, is capped
//     at 2 KiB, and cannot quote a quote.
//  2. starts virtiofsd (cache=none) on the token directory, made read-only
//     in virtiofsd's own mount namespace (see package vmfs: this virtiofsd
//     has no read-only switch, and a guest could remount the share
//     read-write), in a session of its own;
//  3. starts QEMU in a session of its own: the pc machine, KVM when
//     /dev/kvm works (Config.Accel auto) and TCG otherwise, memfd-backed
//     shared memory for vhost-user, the console (ttyS0) to
//     <StateDir>/console.log (the previous start's is kept as
//     console.log.1), ttyS1 as the stop port on <StateDir>/ctl.sock, and
//     waits until QEMU runs its machine.
//
// Stop writes "stop" to the stop port (again every 500 ms, as the guest
// drops what arrives before it opens the port); the guest's supervisor
// then stops its workload as on SIGTERM, reports the exit to the gateway,
// writes its exit code to the console, and powers the VM off. After the
// grace, Stop sends QEMU SIGTERM (QEMU exits at once: a power cut), and
// after another 10 s kills the VM's processes. virtiofsd ends by itself
// once QEMU disconnects; Stop makes sure, as it does for the socat
// bridges, which QEMU starts detached.
//
// # libkrun
//
// libkrun's krun_start_enter takes over its process, so each VM runs in a
// runner process of its own, Config.KrunRunner (the gateway's hidden
// `vm-krun-run` command) with <StateDir>/krun.json describing the VM (see
// package vmfs/krun for the calls). The guest boots with the sandbox's own
// copy of the image's rootfs/ as its root (libkrun shares it writable),
// and its supervisor, started by libkrun's init, mounts the share because
// SANDKEY_VM_INIT=on and SANDKEY_VM_TAG say so. Stop sends the runner
// SIGTERM, then SIGKILL after the grace; libkrun has no stop port. The
// runner's exit status is the workload's, and Status reports it.
//
// # State on disk
//
// Like the process driver, the driver indexes sandboxes under
// <StateRoot>/sandboxes/<id> (a symlink to the spec's StateDir) and keeps
// in the state directory spec.json (the spec as Create recorded it,
// without SandboxEnv) and vm.json: the pid and start time (field 22 of
// /proc/<pid>/stat) of the VMM and of virtiofsd. A process counts as the
// sandbox's only while both match, so a gateway restarted while its VMs
// run finds them, and a recycled pid is never signalled. While this
// gateway process is their parent, one reaper goroutine collects their
// exits (wait4 of each registered pid, never wait4(-1)). Close stops it
// and leaves the VMs running.
//
// The guest's exit code is known when the guest said it: under QEMU, the
// line the guest's init writes to the console before powering off; under
// libkrun, the runner's exit status when this gateway process reaped it.
//
// Everything here needs root: virtiofsd sandboxes itself with namespaces.
package vm
