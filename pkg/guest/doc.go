// Package guest is the contract between a driver, on the gateway's host,
// and the code inside a sandbox (the supervisor, and in a microVM its init
// duties): everything the two sides must agree on without sharing any
// other code.
//
//   - The SANDKEY_* variables a driver sets in a sandbox and the supervisor
//     reads (DESIGN.md §8), and the auth-mode names of SANDKEY_AUTH_MODE.
//   - The paths inside a sandbox: where the token directory, the gateway's
//     socket, the status file and a mounted supervisor binary are.
//   - What a VM driver tells its guest: the boot file appended to the
//     initramfs (Boot, BootFile), the stop request on the stop port, the
//     exit code marker on the console, and the sandkey.* kernel parameters
//     and SANDKEY_VM_* variables that carry the init duties' settings.
//
// Both sides import this package, and it imports nothing of sandkey's: a
// host driver never imports the guest program (pkg/supervisor), and the
// supervisor never imports a driver. A name only one side uses (a driver's
// mount layout, a supervisor's own flag) stays with that side.
package guest
