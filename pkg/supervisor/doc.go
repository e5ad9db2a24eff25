// Package supervisor wires the parts of sandkey's in-sandbox supervisor
// into one process: the token source (pkg/auth/source), the session with
// the gateway (pkg/session), the workload runner and reaper
// (workload) and, in a microVM, init (vminit).
//
// Run's order of work:
//
//  1. In a microVM (PID 1 with no /proc), do init's duties first.
//  2. Check the auth mode (DESIGN.md §8) and its inputs: a missing token
//     directory, a gateway socket that is not there, or a mode it cannot
//     serve ends the supervisor at once with a clear message and its own
//     exit code, never a hang.
//  3. Make the process's one inotify instance (pkg/dirwatch), shared by
//     the token source and the session's watch of the gateway socket:
//     instances are a per-user kernel limit (commonly 128) that every
//     supervisor of the host user draws on. Without one, both poll at a
//     short interval (the directory every second, the socket every 250 ms
//     while reconnecting), which the log says once and the status file
//     always (watch "poll", degraded).
//  4. Start the token source, then the workload, then the session (its
//     exec requests run through the workload's reaper, the one caller of
//     wait in this process). With --user (SANDKEY_USER; the container
//     drivers pass an image's USER), the workload and every exec run as
//     that user, resolved in the sandbox's own /etc/passwd and
//     /etc/group (workload.LookupUser) with its supplementary groups, and
//     with its home as HOME unless HOME was set elsewhere than the
//     supervisor's own home; the supervisor stays root. In auth mode
//     k8s-sa the token source is the exchange's (k8ssa.go): the pod's
//     projected ServiceAccount token, watched like a token directory, is
//     traded at the gateway for a sandkey token held in memory only, and
//     traded again at once when the gateway refuses it or it expired.
//  5. Keep a status file (no token in it) current for the workload and
//     operators: rewritten at every new token and every session coming
//     up or going down.
//  6. When the workload ends, report its exit to the gateway (bounded
//     retries) and exit with its code: 128+signal when it was killed. A
//     workload that cannot be started at all (a mistyped command) is
//     reported too, as exit 127, before any session: the gateway then
//     marks the sandbox stopped rather than running with no process.
//
// NewFlags (flags.go) is the command line: every flag defaults to its
// SANDKEY_* variable, set by the driver; a variable that does not parse
// is an error, never a silent default. docs/operating.md lists them, which
// a test of pkg/gatewaycmd checks.
//
// CopySelf (`supervisor --copy-to DEST`) runs none of that: it copies the
// binary into a volume and exits, for the init container of a Kubernetes
// pod whose image has no supervisor (the kubernetes driver's
// --kubernetes-supervisor-image).
package supervisor
