package session

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// ExecStream implements sessionpb.SupervisorSessionServer: it serves one
// streaming exec. The supervisor's first chunk names the exec; from then
// on its output goes to the Exec waiting for it while a sender goroutine
// forwards the exec's input to the supervisor. Both directions ride this
// call alone, so gRPC's per-stream flow control throttles a large or slow
// stream without touching the session's Connect stream.
//
// When the Exec caller goes away, the call ends with Canceled: the
// supervisor takes the end of its call as the order to kill the command's
// process group.
func (s *Server) ExecStream(stream grpc.BidiStreamingServer[sessionpb.ExecChunk, sessionpb.ExecInput]) error {
	if !s.enter() {
		return status.Error(codes.Unavailable, "gateway is shutting down")
	}
	defer s.wg.Done()
	sandboxID, err := s.authenticateCall(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	pe := s.claimExec(first.GetExecId(), sandboxID, true)
	if pe == nil {
		return status.Errorf(codes.NotFound, "no pending streaming exec %q for sandbox %s", first.GetExecId(), sandboxID)
	}

	ctx, cancel := context.WithCancel(stream.Context())
	chunks := make(chan *sessionpb.ExecChunk)
	recvErr := make(chan error, 1)
	s.wg.Add(1) // ends once the handler returned and gRPC ended the call
	go func() {
		defer s.wg.Done()
		for {
			c, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case chunks <- c:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	sent := make(chan error, 1)
	go func() { sent <- sendExecInput(ctx, stream, pe.input) }()
	defer func() {
		cancel()
		<-sent
	}()

	for chunk := first; ; {
		if chunk != nil {
			if chunk.GetExecId() != pe.id {
				pe.finish(ExecResult{}, fmt.Errorf("output stream switched to exec %q", chunk.GetExecId()))
				return status.Errorf(codes.InvalidArgument, "chunk for exec %q on the stream of exec %q", chunk.GetExecId(), pe.id)
			}
			done, err := pe.take(chunk)
			if done || err != nil {
				return err
			}
		}
		select {
		case chunk = <-chunks:
		case err := <-recvErr:
			pe.finish(ExecResult{}, fmt.Errorf("exec stream ended before the exit status: %w", err))
			if errors.Is(err, io.EOF) {
				return status.Errorf(codes.InvalidArgument, "exec %s: stream closed without an exit status", pe.id)
			}
			return err
		case err := <-sent:
			sent <- err // for the deferred wait
			if err == nil {
				err = stream.Context().Err()
			}
			pe.finish(ExecResult{}, fmt.Errorf("send input: %w", err))
			return err
		case <-pe.gone:
			return status.Errorf(codes.Canceled, "exec %s is no longer awaited: the operator went away", pe.id)
		case <-s.quit:
			return status.Errorf(codes.Unavailable, "exec %s: gateway is shutting down", pe.id)
		case <-ctx.Done():
			pe.finish(ExecResult{}, fmt.Errorf("exec stream: %w", ctx.Err()))
			return ctx.Err()
		}
	}
}

// take hands one chunk to the exec's writers. It reports done when the
// chunk was the exit, and a status error when the call must end.
func (pe *pendingExec) take(chunk *sessionpb.ExecChunk) (bool, error) {
	var werr error
	switch d := chunk.GetData().(type) {
	case nil: // the opening chunk names the exec only
	case *sessionpb.ExecChunk_Stdout:
		werr = pe.write(pe.stdout, d.Stdout)
	case *sessionpb.ExecChunk_Stderr:
		werr = pe.write(pe.stderr, d.Stderr)
	case *sessionpb.ExecChunk_Exit:
		pe.finish(ExecResult{ExitCode: int(d.Exit.GetCode()), Signal: int(d.Exit.GetSignal()), Error: d.Exit.GetError()}, nil)
		return true, nil
	}
	switch {
	case errors.Is(werr, errExecGone):
		return false, status.Errorf(codes.Canceled, "exec %s is no longer awaited", pe.id)
	case werr != nil:
		pe.finish(ExecResult{}, fmt.Errorf("write output: %w", werr))
		return false, status.Errorf(codes.Aborted, "exec %s: the receiver of its output failed", pe.id)
	}
	return false, nil
}

// sendExecInput forwards an exec's input to the supervisor until ctx
// ends; a closed input becomes CloseStdin. Large stdin pieces are split
// so that no message is bigger than an output chunk.
func sendExecInput(ctx context.Context, stream grpc.BidiStreamingServer[sessionpb.ExecChunk, sessionpb.ExecInput], input <-chan ExecInput) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case in, ok := <-input:
			if !ok {
				input = nil
				if err := stream.Send(&sessionpb.ExecInput{Msg: &sessionpb.ExecInput_CloseStdin{CloseStdin: &sessionpb.CloseStdin{}}}); err != nil {
					return err
				}
				continue
			}
			if in.Resize != nil {
				if err := stream.Send(&sessionpb.ExecInput{Msg: &sessionpb.ExecInput_Resize{Resize: windowProto(*in.Resize)}}); err != nil {
					return err
				}
			}
			for p := in.Stdin; len(p) > 0; {
				piece := p[:min(len(p), execChunkSize)]
				p = p[len(piece):]
				if err := stream.Send(&sessionpb.ExecInput{Msg: &sessionpb.ExecInput_Stdin{Stdin: piece}}); err != nil {
					return err
				}
			}
		}
	}
}

func windowProto(w WindowSize) *sessionpb.WindowSize {
	return &sessionpb.WindowSize{Rows: uint32(w.Rows), Cols: uint32(w.Cols)}
}

func windowOf(w *sessionpb.WindowSize) WindowSize {
	return WindowSize{Rows: uint16(min(w.GetRows(), 0xffff)), Cols: uint16(min(w.GetCols(), 0xffff))}
}
