package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ExecCommand is a command the gateway asked the supervisor to run.
type ExecCommand struct {
	ID   string
	Argv []string
	// Env entries are KEY=VALUE, added to the supervisor's environment.
	Env []string
	// Stdin is the whole input when HasStdin; otherwise the command reads
	// /dev/null.
	Stdin    []byte
	HasStdin bool
	// StdinFile, when not nil, is the command's stdin: the read end of a
	// pipe the client fills as the gateway streams input.
	StdinFile *os.File
	// Terminal, when not nil, is the terminal side of a pseudo-terminal
	// the client allocated: the command's stdin, stdout, stderr and
	// controlling terminal. Its output then arrives through the terminal,
	// not through Run's writers.
	Terminal *os.File
}

// Prepare wires cmd's standard streams and process attributes for c:
// the command leads a process group of its own (a session, on a
// terminal), so that killing the group ends what it started too.
func (c ExecCommand) Prepare(cmd *exec.Cmd, stdout, stderr io.Writer) {
	if c.Terminal != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Terminal, c.Terminal, c.Terminal
		// A new session (so a new process group, led by the command) whose
		// controlling terminal is its stdin: job control and ^C work.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		return
	}
	switch {
	case c.StdinFile != nil:
		cmd.Stdin = c.StdinFile
	case c.HasStdin:
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// ExecHandler runs the gateway's exec requests in the sandbox. Run
// writes the command's output to stdout and stderr (safe for concurrent
// use, each write sent to the gateway), stops the command when ctx ends,
// and returns how it ended.
type ExecHandler interface {
	Run(ctx context.Context, cmd ExecCommand, stdout, stderr io.Writer) ExecResult
}

// Exit codes of a command that could not be started, as shells use them.
const (
	ExitNotFound      = 127
	ExitCannotExecute = 126
)

// CommandRunner is the default ExecHandler: it starts the command with
// os/exec in its own process group and waits for it. A supervisor that
// is PID 1 reaps every child itself and must replace it with a runner that
// takes exit statuses from its reaper.
type CommandRunner struct {
	// WaitDelay bounds how long output is still read after the command
	// exited or was killed (its children may hold the pipes); 2 s when zero.
	WaitDelay time.Duration
}

// Run implements ExecHandler.
func (r CommandRunner) Run(ctx context.Context, cmd ExecCommand, stdout, stderr io.Writer) ExecResult {
	if len(cmd.Argv) == 0 {
		return ExecResult{ExitCode: ExitNotFound, Error: "empty command"}
	}
	c := exec.CommandContext(ctx, cmd.Argv[0], cmd.Argv[1:]...)
	c.Env = append(os.Environ(), cmd.Env...)
	cmd.Prepare(c, stdout, stderr)
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = r.WaitDelay
	if c.WaitDelay <= 0 {
		c.WaitDelay = 2 * time.Second
	}
	if err := c.Start(); err != nil {
		code := ExitCannotExecute
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = ExitNotFound
		}
		return ExecResult{ExitCode: code, Error: err.Error()}
	}
	err := c.Wait()
	if c.ProcessState == nil {
		return ExecResult{ExitCode: ExitCannotExecute, Error: err.Error()}
	}
	return resultOf(c.ProcessState)
}

func resultOf(ps *os.ProcessState) ExecResult {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig := int(ws.Signal())
		return ExecResult{ExitCode: 128 + sig, Signal: sig}
	}
	return ExecResult{ExitCode: ps.ExitCode()}
}
