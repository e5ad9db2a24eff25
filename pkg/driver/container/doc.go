// Package container is the one implementation behind the docker and podman
// drivers: each sandbox is a container of a local engine, made and run
// through the Docker Engine API, version 1.41 (the newest Docker 20.10
// accepts, and one Podman's compatible service serves), with the Docker Go
// SDK. No engine CLI is ever run. An Engine value holds what sets one
// engine apart; the docker and podman packages supply theirs.
//
// # The container
//
// A sandbox's container is named sandkey-<sandbox id> and is made from:
//
//   - the image the spec names, looked up with ImageInspect and created
//     from the image's ID. The driver never pulls: a missing image fails
//     Create and Start with ErrImageNotFound ("image X not found locally;
//     build it with `make images` or load it"), and creating from an ID
//     leaves the engine no name to resolve against a registry.
//   - the supervisor as PID 1, running what `docker run IMAGE [COMMAND]`
//     would run (see "Any image" below).
//   - two bind mounts, both of directories and both read-only: the token
//     directory (spec.TokenDir) at /run/sandkey/auth, and the directory of
//     the sandbox's attested gateway socket (spec.SocketDir) at
//     /run/sandkey/gw, where the supervisor dials
//     unix:///run/sandkey/gw/gw.sock. Never a single file: a bind mount of
//     a file pins its inode and goes stale after the first rename over it,
//     which is how every token write lands; a directory mount sees every
//     rename, and a gateway that re-creates its socket after a restart.
//     Read-only does not keep the supervisor from connecting to the socket.
//   - network mode "none" (Config.Network can change it): the session runs
//     over the bind-mounted socket. Podman's API ignores containers.conf's
//     netns, so the mode is always sent explicitly.
//   - the environment driver.Environ(spec.Env, spec.SandboxEnv), every
//     user SANDKEY_* variable stripped, with SANDKEY_TOKEN_DIR and
//     SANDKEY_GATEWAY set to the paths above, and SANDKEY_STATUS_FILE to
//     /run/sandkey/status.json, whatever SandboxEnv says; the engine adds
//     the image's variables beneath. In static mode SandboxEnv holds a raw
//     token, which then sits in the container's configuration, readable
//     by whoever can inspect containers on the engine.
//   - the status file in the container's own writable layer (the engine
//     makes /run/sandkey, root's, for the two mounts), not in a host
//     directory the sandbox could fill. It holds no secret; the engine's
//     archive API or an exec reads it. A read-only root file system, or a
//     supervisor that is not root, only costs the status file: the
//     supervisor warns that it cannot write it and runs on.
//   - the image's user for a baked image; for any other image, root for
//     the supervisor, which runs the workload as the image's user (below).
//     The token directory is 0700 on the host, so a supervisor that does
//     not run as root needs the gateway's writer to own the directory for
//     it (tokendir.WithOwner).
//   - stop signal SIGTERM and no restart policy: the gateway decides when a
//     sandbox runs.
//   - labels io.sandkey.managed=true, io.sandkey.sandbox-id,
//     io.sandkey.instance-id, io.sandkey.name, io.sandkey.image (the name
//     the spec gave) and io.sandkey.spec-hash (below).
//
// # Any image
//
// The driver reads the image's ENTRYPOINT, CMD and USER with ImageInspect
// and tells two kinds of image apart:
//
//   - A baked image, built FROM sandkey-base: its entrypoint starts with
//     /supervisor (guest.BakedSupervisor), as ["/supervisor", "--"]. The
//     container keeps the image's entrypoint and user; the spec's Command,
//     when given, is its Cmd, so it runs `/supervisor -- <command...>`,
//     and an empty Command leaves the image's CMD.
//   - Any other image (python:3.12, a team's agent image, busybox): the
//     driver bind-mounts Config.Supervisor, the gateway host's static
//     supervisor binary, read-only at /run/sandkey/bin/supervisor
//     (guest.SupervisorPath) and makes it the entrypoint, running as root
//     ("0:0"), followed by `--user <the image's USER>` when the image has
//     one, then "--", then what `docker run IMAGE [COMMAND]` would run:
//     the image's ENTRYPOINT followed by the spec's Command, or by the
//     image's CMD when no Command is given. The engine keeps the image's
//     working directory and environment, as nothing overrides them. The
//     supervisor stays PID 1 with the privileges to read the token
//     directory, and starts the workload, and every `sandbox exec`, as the
//     image's user (names resolved in the image's own /etc/passwd and
//     /etc/group, with its supplementary groups and HOME), as `docker run`
//     and `docker exec` would have.
//
// An image with nothing to run (no entrypoint past the supervisor, no CMD,
// no Command) is refused at Create, naming the image, and so is an image
// without a supervisor when Config.Supervisor is empty. New refuses a
// Config.Supervisor that is not a static ELF executable: it must run in
// images with any libc or none.
//
// The supervisor binary is the one single-file bind mount, a deliberate
// exception to the rule above: it is read once, when PID 1 starts, and
// the engine resolves a bind mount's source at every container start, so
// a binary upgraded by a rename over it is the one the sandbox's next
// start runs.
//
// # State lives in the engine
//
// The driver keeps nothing on disk (spec.StateDir is unused) and nothing in
// memory but per-sandbox locks: a container's name finds it, and its
// labels say whose it is and which start it belongs to. A new Driver after
// a gateway restart therefore sees exactly what the old one saw. A
// container that bears a sandbox's name but not the driver's labels is
// never touched: every operation on that sandbox fails with
// ErrNotManaged. List finds every managed container by label.
//
// # One container per start
//
// A container's environment and labels are fixed when it is made, and
// every start of a sandbox has a new instance ID, which the supervisor
// reads from SANDKEY_INSTANCE_ID and Status reports from the label. So the
// driver makes a container per start rather than record the instance
// elsewhere:
//
//  1. Create and Start build the container request and digest it,
//     the image's ID included, into the io.sandkey.spec-hash label.
//  2. An existing container with the same digest is kept: Create followed
//     by Start with the same spec starts the container Create made. The
//     gateway calls Create before its first token write makes the token
//     directory and its socket the socket directory; Create then checks
//     the spec and the image (never pulling) but makes no container, and
//     Start makes it. The gateway's Create and Start differ in instance ID
//     anyway, so a container made by Create would be made anew at Start.
//  3. An existing stopped container with another digest (a new instance, a
//     rebuilt image, a changed command) is removed and made anew; its
//     exit code and logs go with it.
//  4. An existing running container is left alone: Create is a no-op, and
//     Start fails with ErrAlreadyRunning, as a running supervisor holds
//     another instance ID that a silent success would hide.
//
// Stop sends SIGTERM to PID 1 and SIGKILL after the grace, rounded up to
// whole seconds (the engines count in seconds), and keeps the container
// with its exit code and logs. Delete removes it with force (both engines
// kill a running container at once) and with its anonymous volumes; the
// token and socket directories are the gateway's to remove. Status reads
// ContainerInspect: running (paused and restarting count as running),
// stopped with the exit code once the container ran (137 after SIGKILL),
// stopped without an exit for a container never started, or missing.
package container
