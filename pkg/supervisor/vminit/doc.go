// Package vminit does what an init process must do before anything else
// when the supervisor boots a microVM (DESIGN §10): inside a container or on
// a host these are done already, so NeedsInit tells the two cases apart.
//
// Setup runs these steps, in order; the first that fails ends it, with an
// error that names the step and its input:
//
//  1. Mount the kernel file systems: /proc (proc), /sys (sysfs), /dev
//     (devtmpfs), /dev/pts (devpts, for exec terminals) and /run (tmpfs). Each mount point is created if missing.
//  2. Load the kernel modules, in the order given, with finit_module. A
//     module that is already loaded (EEXIST) is not an error. The order is
//     the caller's: a guest kernel package ships no modules.dep, so the
//     image builder resolves the dependencies.
//  3. Bring up the loopback interface.
//  4. When an address is configured, set it and its netmask on the
//     network interface (eth0 by default) and bring that up; with a
//     gateway, add the default route through it. All with the classic
//     socket ioctls (SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCADDRT):
//     no netlink, no DHCP, which a VM on QEMU's user network or libkrun's
//     network does not need.
//  5. When a share tag is configured, mount the virtio-fs share of that
//     tag read-only at the share mount point (/run/sandkey/auth by
//     default), where the supervisor's token source reads the token
//     directory.
//
// The host passes the settings on the kernel command line as sandkey.*
// parameters (guest.KernelParam; ParseKernelCmdline, ConfigFromCmdline):
// the kernel keeps dotted parameters to itself rather than handing them to
// init as environment, so they are read from /proc/cmdline once /proc is
// mounted.
// PowerOff ends the VM when the workload is done.
//
// # The boot file, the stop port, the exit code
//
// What the kernel command line cannot carry well (it shows in the host's
// process list, holds 2 KiB and cannot quote a quote) comes in a boot
// file: the VM driver appends an archive holding guest.BootFile to the
// image's initramfs (package guest holds the format, shared with the
// driver). StartGuest, run before the supervisor parses its flags, adds
// the file's environment to the process's and takes its arguments when
// the kernel gave none. The file may also name a stop port, a serial
// device on which the host writes "stop" for a graceful stop: StartGuest
// watches it and answers with SIGTERM to the supervisor, repeated until
// it ends (init ignores a signal that arrives before its handler is set).
// Halt writes guest.ExitMarker and the exit code to the console, where the
// host reads it, and powers off.
//
// Where the VM's own init starts the supervisor (libkrun), SANDKEY_VM_*
// variables stand for the sandkey.* parameters (EnvParams), and
// SANDKEY_VM_INIT=on makes the supervisor do the duties /proc's presence
// would otherwise skip.
package vminit
