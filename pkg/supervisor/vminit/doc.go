// Package vminit does what an init process must do before anything else
// when the supervisor boots a microVM (DESIGN §10): inside a container or on
// a host these are done already, so NeedsInit tells the two cases apart.
//
// Setup runs these steps, in order; the first that fails ends it, with an
// error that names the step and its input:
//
//  1. Mount the kernel file systems: /proc (proc), /sys (sysfs), /dev
//     (devtmpfs) and /run (tmpfs). Each mount point is created if missing.
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
// parameters (ParseKernelCmdline, ConfigFromCmdline): the kernel keeps
// dotted parameters to itself rather than handing them to init as
// environment, so they are read from /proc/cmdline once /proc is mounted.
// PowerOff ends the VM when the workload is done.
package vminit
