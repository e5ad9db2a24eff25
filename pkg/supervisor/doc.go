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
//  3. Start the token source, then the workload, then the session (its
//     exec requests run through the workload's reaper, the one caller of
//     wait in this process). In auth mode k8s-sa the token source is the
//     exchange's (k8ssa.go): the pod's projected ServiceAccount token,
//     watched like a token directory, is traded at the gateway for a
//     sandkey token held in memory only, and traded again at once when
//     the gateway refuses it or it expired.
//  4. Keep a status file (no token in it) current for the workload and
//     operators.
//  5. When the workload ends, report its exit to the gateway (bounded
//     retries) and exit with its code: 128+signal when it was killed.
package supervisor
