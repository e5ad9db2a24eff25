// Package process is the driver that runs each sandbox as a local process
// of the gateway's host: the supervisor binary with the workload as its
// arguments, `<supervisor> -- <command...>`. It needs no container engine
// and no privileges, and isolates nothing: it is the development backend,
// and the one for any Linux host where the workload is trusted.
//
// # The contract with the supervisor
//
// The token delivery is dir-bind in its simplest form: the supervisor reads
// the host's token directory in place (SANDKEY_TOKEN_DIR is the spec's
// TokenDir) and dials the sandbox's attested socket,
// SANDKEY_GATEWAY=unix://<SocketDir>/gw.sock. The directory is read-only to
// the sandbox only by convention: the process runs as the gateway's user.
// The supervisor's environment is built from scratch: the user's variables
// with every SANDKEY_* dropped, PATH and HOME when the user set none, then
// the gateway's SANDKEY_* variables. The gateway's own environment is never
// inherited. It runs in /, with stdin from /dev/null and stdout and stderr
// appended to <StateDir>/sandbox.log.
//
// # State on disk
//
// A sandbox's state directory (the spec's StateDir, 0700) holds:
//
//	spec.json    the spec as Create recorded it (without SandboxEnv, which
//	             the gateway builds anew for every start and which holds a
//	             raw token in static mode)
//	pid          {pid, start_ticks, instance_id, started_at} of the last start
//	exit         {pid, start_ticks, exit_code, ...} once that start's exit
//	             was collected
//	sandbox.log  the supervisor's output, appended across starts
//
// Stop, Delete and Status get only a sandbox ID, so the driver keeps an
// index: <StateRoot>/sandboxes/<id> is a symlink to the state directory (or
// is the state directory itself, which is where a spec without StateDir
// puts it). Records are written to a temporary file renamed into place.
//
// A pid alone would be a weak handle: the kernel recycles pids, and after a
// gateway restart a recorded pid may name an unrelated process. So the pid
// record also holds the process's start time (field 22 of /proc/<pid>/stat)
// and a process counts as the sandbox's supervisor only while both match.
// A recycled pid reads as a stopped sandbox and is never signalled.
//
// # Process lifetime
//
//  1. Start launches the supervisor in a session of its own (setsid, which
//     also makes it a process group leader) and without a parent-death
//     signal, so it outlives the gateway. The real supervisor runs its
//     workload in a process group of its own, so the session, not the
//     supervisor's process group, is what holds the whole sandbox; unlike a
//     parent link, session membership survives the supervisor's death.
//  2. While this gateway process is the supervisor's parent, the Driver's
//     one reaper goroutine collects its exit: on every SIGCHLD it calls
//     wait4(pid, WNOHANG) for each child it registered (never wait4(-1),
//     which would steal other code's children), and writes the exit record.
//     The reaper does not use cmd.Wait because a blocked wait cannot be
//     cancelled, and Close must end the reaper while the sandboxes run on.
//     Status and Stop also collect a registered child's exit themselves,
//     under the same lock, so they never see a child that ended without
//     its exit recorded.
//  3. After a gateway restart the supervisor is no longer a child of the
//     gateway: it is found through the pid record, Stop polls /proc until
//     it is gone or a zombie, and its exit code is unknown. (If it is this
//     process's child after all, because the gateway re-executed itself,
//     it is registered with the reaper when first seen.)
//  4. Stop sends SIGTERM to the supervisor's process group (the supervisor
//     forwards it to its workload, which therefore gets it once), waits up
//     to the grace for the supervisor to end, then sends SIGKILL to every
//     live process of the session until none is left, which also ends
//     whatever outlived a supervisor that ended within its grace.
//
// Starting a running sandbox is an error (ErrAlreadyRunning): the running
// supervisor holds an older instance ID, which a silent success would hide.
//
// Close ends the reaper and leaves every sandbox running; a Driver opened
// later on the same StateRoot adopts them.
package process
