// Package hostproc names host processes for their whole life and acts on
// them through /proc and signals, for the drivers that run sandboxes as
// host processes (the process driver's supervisors, the VM driver's VMMs
// and virtiofsd).
//
// The kernel recycles pids, so a pid alone may name another process by the
// time a driver looks again, possibly after a gateway restart. A Process is
// therefore a pid plus its start time (field 22 of /proc/<pid>/stat, in
// clock ticks after boot): no two processes share both.
//
// The algorithm for every action on a recorded Process:
//
//  1. ReadStat reads /proc/<pid>/stat; ParseStat counts its fields from
//     the last ')' because the command name may hold spaces and ')'.
//  2. Observe compares the start time with the recorded one: a mismatch or
//     a missing pid is Gone; state Z or X is Zombie (ended, unreaped);
//     anything else is Alive.
//  3. Signal acts only on a Process that is still Alive; SignalGroup and
//     KillSession act on the group or session the Process leads, whose id
//     stays taken while any member lives, so it cannot name a stranger.
//  4. KillSession sends SIGKILL to every live member of the session again
//     and again until none is left or its timeout passes: a member can
//     fork while /proc is listed, and a killed one shows until it ends.
//
// A Reaper collects the exits of a driver's own children: on every
// SIGCHLD it calls wait4(pid, WNOHANG) for each registered child, never
// wait4(-1), which would steal other code's children, and hands the
// status to the callback the child was registered with.
package hostproc
