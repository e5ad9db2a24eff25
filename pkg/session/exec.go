package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// ExecRequest is a command for the gateway to run in a sandbox.
type ExecRequest struct {
	Argv []string
	// Env entries are KEY=VALUE, added to the supervisor's environment.
	Env []string
	// Stdin is the command's whole input, at most MaxExecStdin bytes; nil
	// gives it no input (/dev/null).
	Stdin []byte
	// Stdout and Stderr receive the output as it arrives; nil discards it.
	// Exec never writes to them after it has returned.
	Stdout, Stderr io.Writer

	// Input, when not nil, makes the exec interactive: it carries the
	// command's stdin (with StreamStdin) and terminal size changes as the
	// operator produces them, on an ExecStream call of the supervisor's
	// own (never on the session). Closing it ends the command's stdin.
	// The caller owns it; Exec stops reading it once it returns.
	Input <-chan ExecInput
	// StreamStdin: the command reads the Stdin pieces of Input rather
	// than Stdin. Needs Input.
	StreamStdin bool
	// TTY runs the command on a pseudo-terminal the supervisor allocates,
	// of size Window; all its output arrives on Stdout.
	TTY    bool
	Window WindowSize
}

// ExecInput is one piece of an interactive exec's input: stdin bytes, or
// a new terminal size.
type ExecInput struct {
	Stdin  []byte
	Resize *WindowSize
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Rows, Cols uint16
}

// streaming reports whether req needs an ExecStream call.
func (req ExecRequest) streaming() bool { return req.Input != nil || req.TTY }

// ExecResult is how an exec ended.
type ExecResult struct {
	// ExitCode is the exit status: 128+Signal when killed by a signal,
	// 127 when the command could not be started.
	ExitCode int
	Signal   int
	// Error says why the command could not run at all (binary not found);
	// empty when it ran.
	Error string
}

// errSupervisorGone ends the execs of a session that ended under them.
var errSupervisorGone = fmt.Errorf("%w: the sandbox's supervisor disconnected, which ends its commands", ErrSessionEnded)

// errExecGone stops an output stream whose exec nobody waits for any more.
var errExecGone = errors.New("exec is no longer awaited")

// pendingExec is an exec waiting for its output and exit, matched by id
// and sandbox.
type pendingExec struct {
	id        string
	sandboxID string
	stdout    io.Writer
	stderr    io.Writer
	done      chan struct{} // closed by finish
	// input feeds a streaming exec's ExecStream call; nil for none.
	input     <-chan ExecInput
	streaming bool
	gone      chan struct{} // closed by abandon: nobody waits any more

	mu      sync.Mutex
	claimed bool // an ExecOutput or ExecStream call has taken it
	closed  bool // finished or abandoned: no more writes
	result  ExecResult
	err     error
}

func (pe *pendingExec) write(w io.Writer, p []byte) error {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.closed {
		return errExecGone
	}
	if w == nil {
		return nil
	}
	_, err := w.Write(p)
	return err
}

func (pe *pendingExec) finish(res ExecResult, err error) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.closed {
		return
	}
	pe.closed = true
	pe.result, pe.err = res, err
	close(pe.done)
}

// abandon stops all writes; once it returns, the caller's writers are
// its own again.
func (pe *pendingExec) abandon() {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pe.closed = true
	select {
	case <-pe.gone:
	default:
		close(pe.gone)
	}
}

// Exec runs req in sandboxID over its session and waits for it to end.
// The request goes out on the session; the output comes back on the
// supervisor's ExecOutput call. Cancelling ctx asks the supervisor to kill
// the command. It fails with ErrNotConnected without a session and with
// ErrSessionEnded if the session ends first.
func (s *Server) Exec(ctx context.Context, sandboxID string, req ExecRequest) (ExecResult, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return ExecResult{}, fmt.Errorf("exec in %s: empty command", sandboxID)
	}
	if len(req.Stdin) > MaxExecStdin {
		return ExecResult{}, fmt.Errorf("exec %q in %s: stdin of %d bytes exceeds %d", req.Argv[0], sandboxID, len(req.Stdin), MaxExecStdin)
	}
	if req.streaming() && req.Stdin != nil {
		return ExecResult{}, fmt.Errorf("exec %q in %s: stdin given both whole and as a stream", req.Argv[0], sandboxID)
	}
	if req.StreamStdin && req.Input == nil {
		return ExecResult{}, fmt.Errorf("exec %q in %s: stdin to stream but no input", req.Argv[0], sandboxID)
	}
	pe := &pendingExec{id: randid.New(idBytes), sandboxID: sandboxID, stdout: req.Stdout, stderr: req.Stderr, done: make(chan struct{}),
		input: req.Input, streaming: req.streaming(), gone: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ExecResult{}, fmt.Errorf("exec %q in %s: %w", req.Argv[0], sandboxID, ErrServerClosed)
	}
	sess := s.sessions[sandboxID]
	if sess == nil {
		s.mu.Unlock()
		return ExecResult{}, fmt.Errorf("exec %q in %s: %w", req.Argv[0], sandboxID, ErrNotConnected)
	}
	s.execs[pe.id] = pe
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.execs, pe.id)
		s.mu.Unlock()
		pe.abandon()
	}()

	msg := &sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_ExecRequest{ExecRequest: &sessionpb.ExecRequest{
		ExecId: pe.id, Argv: req.Argv, Env: req.Env, Stdin: req.Stdin, HasStdin: req.Stdin != nil,
		Stream: pe.streaming, StreamStdin: req.StreamStdin, Tty: req.TTY,
	}}}
	if req.TTY {
		msg.GetExecRequest().Window = windowProto(req.Window)
	}
	fail := func(err error) (ExecResult, error) {
		return ExecResult{}, fmt.Errorf("exec %q (%s) in %s: %w", req.Argv[0], pe.id, sandboxID, err)
	}
	select {
	case sess.out <- msg:
		sess.outQueued()
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-sess.done:
		return fail(ErrSessionEnded)
	}
	s.log.Info("exec started", zap.String("sandbox", sandboxID), zap.String("exec", pe.id), zap.String("command", req.Argv[0]))
	select {
	case <-pe.done:
		if pe.err != nil {
			select {
			case <-sess.closing: // the supervisor ended it because the session did
				return fail(fmt.Errorf("%w (%v)", errSupervisorGone, pe.err))
			default:
			}
			return fail(pe.err)
		}
		return pe.result, nil
	case <-ctx.Done():
		cancel := &sessionpb.GatewayMessage{Msg: &sessionpb.GatewayMessage_ExecCancel{
			ExecCancel: &sessionpb.ExecCancel{ExecId: pe.id}}}
		select {
		case sess.out <- cancel:
			sess.outQueued()
		default: // the queue is full; the supervisor's stream fails on its next write
		}
		return fail(ctx.Err())
	case <-sess.done:
		return fail(errSupervisorGone)
	}
}

// claimExec hands the pending exec id to the ExecOutput (or, streaming,
// ExecStream) call of sandboxID, once. Another sandbox's exec is as absent
// as a missing one.
func (s *Server) claimExec(id, sandboxID string, streaming bool) *pendingExec {
	s.mu.Lock()
	defer s.mu.Unlock()
	pe := s.execs[id]
	if pe == nil || pe.sandboxID != sandboxID || pe.streaming != streaming {
		return nil
	}
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.claimed || pe.closed {
		return nil
	}
	pe.claimed = true
	return pe
}

// ErrExecUnsupported fails an interactive exec whose supervisor answered
// it the old way: it predates ExecStream and ignored the request's
// stream flag.
var ErrExecUnsupported = errors.New("the sandbox's supervisor cannot run interactive execs (it predates them): rebuild the sandbox's image with a current supervisor")

// failOldSupervisor fails the streaming exec id of sandboxID, if there is
// one, when its supervisor answers on ExecOutput.
func (s *Server) failOldSupervisor(id, sandboxID string) {
	s.mu.Lock()
	pe := s.execs[id]
	s.mu.Unlock()
	if pe != nil && pe.sandboxID == sandboxID && pe.streaming {
		pe.finish(ExecResult{}, ErrExecUnsupported)
	}
}

// ExecOutput implements sessionpb.SupervisorSessionServer: it feeds one
// exec's output to the Exec waiting for it.
func (s *Server) ExecOutput(stream sessionpb.SupervisorSession_ExecOutputServer) error {
	sandboxID, err := s.authenticateCall(stream.Context())
	if err != nil {
		return err
	}
	var pe *pendingExec
	for {
		chunk, err := stream.Recv()
		if err != nil {
			if pe != nil {
				pe.finish(ExecResult{}, fmt.Errorf("output stream ended before the exit status: %w", err))
			}
			if errors.Is(err, io.EOF) {
				return stream.SendAndClose(&sessionpb.ExecOutputResponse{})
			}
			return err
		}
		if pe == nil {
			if pe = s.claimExec(chunk.GetExecId(), sandboxID, false); pe == nil {
				s.failOldSupervisor(chunk.GetExecId(), sandboxID)
				return status.Errorf(codes.NotFound, "no pending exec %q for sandbox %s", chunk.GetExecId(), sandboxID)
			}
		} else if chunk.GetExecId() != pe.id {
			pe.finish(ExecResult{}, fmt.Errorf("output stream switched to exec %q", chunk.GetExecId()))
			return status.Errorf(codes.InvalidArgument, "chunk for exec %q on the stream of exec %q", chunk.GetExecId(), pe.id)
		}
		var werr error
		switch d := chunk.GetData().(type) {
		case *sessionpb.ExecChunk_Stdout:
			werr = pe.write(pe.stdout, d.Stdout)
		case *sessionpb.ExecChunk_Stderr:
			werr = pe.write(pe.stderr, d.Stderr)
		case *sessionpb.ExecChunk_Exit:
			pe.finish(ExecResult{ExitCode: int(d.Exit.GetCode()), Signal: int(d.Exit.GetSignal()), Error: d.Exit.GetError()}, nil)
			return stream.SendAndClose(&sessionpb.ExecOutputResponse{})
		}
		switch {
		case errors.Is(werr, errExecGone):
			return status.Errorf(codes.Canceled, "exec %s is no longer awaited", pe.id)
		case werr != nil:
			pe.finish(ExecResult{}, fmt.Errorf("write output: %w", werr))
			return status.Errorf(codes.Aborted, "exec %s: the receiver of its output failed", pe.id)
		}
	}
}
