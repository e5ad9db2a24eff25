package supervisor

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"syscall"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/supervisor/workload"
)

// reaperExec runs the gateway's exec requests as children whose statuses
// come from the workload's reaper: as PID 1 the supervisor reaps every
// child, so os/exec's own Wait would lose them.
type reaperExec struct {
	reaper *workload.Reaper
	env    []string
	user   *workload.User // run as the workload's user; nil: the supervisor's
}

// Run implements session.ExecHandler.
func (r reaperExec) Run(ctx context.Context, c session.ExecCommand, stdout, stderr io.Writer) session.ExecResult {
	if len(c.Argv) == 0 {
		return session.ExecResult{ExitCode: session.ExitNotFound, Error: "empty command"}
	}
	path, err := exec.LookPath(c.Argv[0])
	if err != nil {
		// As shells: 127 for a command that is not there, 126 for one
		// that is but cannot run (not executable, a directory).
		code := session.ExitCannotExecute
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = session.ExitNotFound
		}
		return session.ExecResult{ExitCode: code, Error: err.Error()}
	}
	cmd := exec.Command(path, c.Argv[1:]...)
	cmd.Args[0] = c.Argv[0]
	cmd.Env = append(append([]string{}, r.env...), c.Env...)
	c.Prepare(cmd, stdout, stderr)
	if u := r.user; u != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}
	exits, err := r.reaper.Start(cmd)
	if err != nil {
		code := session.ExitCannotExecute
		if errors.Is(err, fs.ErrNotExist) {
			code = session.ExitNotFound
		}
		return session.ExecResult{ExitCode: code, Error: err.Error()}
	}
	select {
	case ex := <-exits:
		return session.ExecResult{ExitCode: ex.Code, Signal: int(ex.Signal)}
	case <-ctx.Done():
		r.reaper.Kill(cmd.Process.Pid, syscall.SIGKILL)
		ex := <-exits
		return session.ExecResult{ExitCode: ex.Code, Signal: int(ex.Signal)}
	}
}

// execEnv is the environment exec'd commands start from: the supervisor's
// own, without the static token.
func execEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if hasPrefix(kv, guest.EnvToken+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
