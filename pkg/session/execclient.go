package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

const (
	// execDrainWait bounds how long a terminal's output is still read
	// after the command exited: a background child may hold the terminal.
	execDrainWait = 2 * time.Second
	// execStreamEndWait bounds how long the supervisor waits, after the
	// exit, for the gateway to end an ExecStream call.
	execStreamEndWait = 5 * time.Second
)

// execInputs is the supervisor's side of a streaming exec's stdio: the
// master of its pseudo-terminal, or the write end of its stdin pipe.
type execInputs struct {
	master *os.File // tty: the command's terminal, master side
	tty    *os.File // tty: the terminal side, the command's stdio
	stdinR *os.File // stdin pipe: the command's end
	stdinW *os.File // stdin pipe: ours, fed from the stream
}

// newExecInputs allocates what req asks for and wires it into cmd.
func newExecInputs(req *sessionpb.ExecRequest, cmd *ExecCommand) (*execInputs, error) {
	x := &execInputs{}
	switch {
	case req.GetTty():
		master, tty, err := openPTY()
		if err != nil {
			return nil, err
		}
		x.master, x.tty = master, tty
		if err := setWindowSize(master, windowOf(req.GetWindow())); err != nil {
			x.close()
			return nil, err
		}
		cmd.Terminal = tty
	case req.GetStreamStdin():
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		x.stdinR, x.stdinW = r, w
		cmd.StdinFile = r
	}
	return x, nil
}

// stdin is where the command's input goes, nil when it reads nothing.
func (x *execInputs) stdin() *os.File {
	if x.master != nil {
		return x.master
	}
	return x.stdinW
}

// commandEnded closes the parent's copies of the command's ends, so that
// the terminal's output reaches its end once the command's processes are
// gone, and a write to a stdin nobody reads fails.
func (x *execInputs) commandEnded() {
	for _, f := range []*os.File{x.tty, x.stdinR, x.stdinW} {
		if f != nil {
			f.Close()
		}
	}
}

func (x *execInputs) close() {
	x.commandEnded()
	if x.master != nil {
		x.master.Close()
	}
}

// feed applies the gateway's input until the call ends: stdin to the
// command, sizes to its terminal. A call that ends in an error (the
// operator went away, the gateway ended the call) cancels the command.
func (x *execInputs) feed(stream grpc.BidiStreamingClient[sessionpb.ExecChunk, sessionpb.ExecInput], cancel context.CancelFunc, log *zap.Logger) {
	stdin := x.stdin()
	for {
		in, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Info("exec stream ended; ending the command", zap.Error(err))
				cancel()
			}
			return
		}
		switch m := in.GetMsg().(type) {
		case *sessionpb.ExecInput_Stdin:
			if stdin == nil {
				continue
			}
			// Blocks while the command does not read: the stream's flow
			// control then holds the gateway back. After a failure (the
			// command closed its stdin) input is dropped.
			if _, err := stdin.Write(m.Stdin); err != nil {
				stdin = nil
			}
		case *sessionpb.ExecInput_CloseStdin:
			if x.stdinW != nil {
				x.stdinW.Close()
				stdin = nil
			}
		case *sessionpb.ExecInput_Resize:
			if x.master != nil {
				if err := setWindowSize(x.master, windowOf(m.Resize)); err != nil {
					log.Debug("resize exec terminal", zap.Error(err))
				}
			}
		}
	}
}

// runStreamingExec runs one streaming exec (ExecRequest.stream) on an
// ExecStream call of its own: output up, input down. ctx is the exec's;
// cancel ends it.
func (c *Client) runStreamingExec(ctx context.Context, cancel context.CancelFunc, log *zap.Logger, req *sessionpb.ExecRequest) {
	id := req.GetExecId()
	log = log.With(zap.String("exec", id))
	stream, err := c.rpc.ExecStream(ctx)
	if err != nil {
		log.Warn("open exec stream", zap.Error(err))
		return
	}
	sink := &execSink{stream: stream, id: id, cancel: cancel, done: stream.CloseSend}
	if err := sink.send(&sessionpb.ExecChunk{ExecId: id}); err != nil {
		log.Warn("open exec stream", zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	cmd := ExecCommand{ID: id, Argv: req.GetArgv(), Env: req.GetEnv()}
	x, err := newExecInputs(req, &cmd)
	if err != nil {
		log.Warn("exec not started", zap.Error(err))
		if err := sink.exit(ExecResult{ExitCode: ExitCannotExecute, Error: err.Error()}); err != nil {
			log.Warn("send exec exit", zap.Error(err))
		}
		return
	}
	defer x.close()
	fed := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(fed)
		x.feed(stream, cancel, log)
	}()
	copied := make(chan struct{})
	if x.master != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(copied)
			io.Copy(sink.writer(true), x.master) // ends at EIO: no terminal side open any more
		}()
	} else {
		close(copied)
	}

	log.Info("exec started", zap.Strings("argv", cmd.Argv), zap.Bool("tty", req.GetTty()), zap.Bool("stdin", req.GetStreamStdin()))
	res := c.cfg.Exec.Run(ctx, cmd, sink.writer(true), sink.writer(false))
	x.commandEnded()
	drain := time.NewTimer(execDrainWait)
	select {
	case <-copied:
	case <-drain.C:
		x.master.Close() // a background child holds the terminal
		<-copied
	}
	drain.Stop()
	log.Info("exec ended", zap.Int("code", res.ExitCode), zap.String("error", res.Error))
	if err := sink.exit(res); err != nil {
		log.Warn("send exec exit", zap.Error(err))
		return
	}
	end := time.NewTimer(execStreamEndWait)
	defer end.Stop()
	select {
	case <-fed:
	case <-end.C:
	}
}
