// Package workload runs a sandbox's workload under the supervisor, which is
// PID 1 of the sandbox (or, outside a sandbox, a child subreaper).
//
// Two duties of an init process live here: reaping every child, and
// forwarding signals to the workload.
//
// # Reaping
//
// A Reaper is the only code in the process that calls wait4(-1, ...). Every
// child the supervisor starts (the workload, and the commands of exec
// requests) is started through Reaper.Start, which hands back a channel
// that receives that child's Exit. Orphans reparented to the supervisor are
// reaped too; their statuses are logged at debug level and dropped.
//
// The algorithm:
//
//  1. NewReaper subscribes to SIGCHLD and, unless the process is PID 1,
//     marks it a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so that
//     orphaned grandchildren are reparented to it rather than to the
//     machine's init.
//  2. Start holds a fork lock for reading across fork+exec and the
//     registration of the new pid; a reap pass holds it for writing. So a
//     reap pass never sees a child that is started but not yet registered:
//     the race between fork and wait4(-1) cannot lose a status, and any pid
//     a pass does not know is an orphan, which can be dropped at once. (This
//     is why no table of unclaimed statuses is kept: with the lock, such a
//     table would only ever hold orphans and grow without bound.)
//  3. On every SIGCHLD (signals coalesce), a pass calls wait4(-1, WNOHANG)
//     until no exited child is left, and hands each registered child's
//     status to that child's finisher.
//  4. The finisher waits for the child's output to be copied (see below),
//     releases the process handle, and publishes the Exit on the channel,
//     which is then closed.
//
// Code that starts children through os/exec directly (cmd.Run, cmd.Wait)
// must not run in a process with a Reaper: the reaper would take the
// child's status and cmd.Wait would fail with ECHILD. Reaper.Start never
// calls cmd.Wait.
//
// # Standard streams
//
// A cmd.Stdin, cmd.Stdout or cmd.Stderr that is nil or an *os.File is
// handed to the child as is. Any other io.Reader or io.Writer is connected
// through an os.Pipe that the Reaper owns (never cmd.StdoutPipe, which
// needs cmd.Wait): the child gets one end, the parent's copy of that end is
// closed right after the start, and a goroutine copies between the other
// end and the caller's reader or writer. A child's Exit is published only
// after its stdout and stderr copies reached end of file, so a caller that
// receives the Exit has seen all the output; if a grandchild keeps the pipe
// open, the Reaper waits at most ReaperConfig.OutputDrain after the exit,
// then closes its end. The stdin pipe is closed when the child exits. As
// with os/exec, a copy goroutine ends only when the caller's Read or Write
// returns, and Close waits for it: pass writers that do not block forever.
//
// # The workload and its signals
//
// Start runs the workload in its own process group (the group leader is the
// workload), so that a forwarded signal reaches the whole job, including
// the children of a shell script, as it would for a job in a terminal. When
// the workload's stdin is the supervisor's controlling terminal, the group
// is also made the terminal's foreground group, so an interactive workload
// can read it. The Runner forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
// SIGUSR1, SIGUSR2 and SIGWINCH to that group. A SIGTERM (or Stop, or the
// end of Start's context) also arms a timer: if the workload is still
// running after Config.Grace, its group gets SIGKILL. Signals are sent only
// while the workload's status is not yet reaped, under the reaper's lock,
// so a recycled pid is never signalled. An Exit's Code is the workload's
// exit status, or 128 plus the signal number when a signal killed it, as
// shells report it.
//
// # Users
//
// Config.UID, GID and Groups set the workload's credentials; the
// supervisor, root, stays as it is. LookupUser turns an image's USER
// (name, uid, uid:gid, name:group) into them the way container engines
// do, from the passwd and group files of the root it is given (the
// sandbox's own, since the supervisor runs in the image's root file
// system): a name must have an entry, a numeric id needs none.
package workload
