package admin

import (
	"bytes"
	"errors"
	"io"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/session"
)

// Exec implements adminpb.AdminServer: an interactive exec. The first
// message starts it; then the caller's stdin pieces and terminal sizes go
// to the command as they come, over the supervisor's ExecStream call, and
// the caller half-closing its side ends the command's stdin. The caller
// going away kills the command's process group.
func (s *Server) Exec(stream grpc.BidiStreamingServer[adminpb.ExecInput, adminpb.ExecSandboxResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return invalidf("exec: the first message must be start, with the request")
	}
	req := start.GetRequest()
	ref := req.GetSandbox()
	if err := requireSandbox(ref); err != nil {
		return err
	}
	if req.GetHasStdin() || len(req.GetStdin()) > 0 {
		return invalidf("exec in sandbox %q: stdin streams on Exec: send it as stdin messages, not in the request", ref)
	}
	ereq, timeout, err := execRequest(req)
	if err != nil {
		return err
	}
	if pc, err := s.peerFor(stream.Context(), "exec in", ref); err != nil {
		return err
	} else if pc != nil {
		defer pc.release()
		return pc.exec(first, stream)
	}
	input := make(chan session.ExecInput)
	ereq.Input, ereq.StreamStdin, ereq.TTY = input, start.GetStdin(), start.GetTty()
	if w := start.GetWindow(); w != nil {
		ereq.Window = session.WindowSize{Rows: uint16(min(w.GetRows(), 0xffff)), Cols: uint16(min(w.GetCols(), 0xffff))}
	}
	// The reader ends when the caller half-closes or the call ends, which
	// gRPC makes happen once this handler has returned.
	go s.readExecInput(stream, input, ref)
	return s.runExec(stream.Context(), ref, ereq, timeout, &execOutput{stream: stream})
}

// readExecInput forwards the caller's input to the exec; it closes input
// when the caller half-closes (the end of stdin) or the call ends.
func (s *Server) readExecInput(stream grpc.BidiStreamingServer[adminpb.ExecInput, adminpb.ExecSandboxResponse], input chan<- session.ExecInput, ref string) {
	defer close(input)
	ctx := stream.Context()
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		var in session.ExecInput
		switch msg := m.GetMsg().(type) {
		case *adminpb.ExecInput_Stdin:
			in.Stdin = msg.Stdin
		case *adminpb.ExecInput_Resize:
			in.Resize = &session.WindowSize{Rows: uint16(min(msg.Resize.GetRows(), 0xffff)), Cols: uint16(min(msg.Resize.GetCols(), 0xffff))}
		default:
			s.log.Warn("exec input ignored: only stdin and resize may follow start", zap.String("sandbox", ref))
			continue
		}
		select {
		case input <- in:
		case <-ctx.Done():
			return
		}
	}
}

// SandboxLogs implements adminpb.AdminServer: the workload's output as
// the sandbox's driver keeps it, followed when asked until the caller
// ends the call.
func (s *Server) SandboxLogs(req *adminpb.SandboxLogsRequest, stream grpc.ServerStreamingServer[adminpb.SandboxLogsChunk]) error {
	ref := req.GetSandbox()
	if err := requireSandbox(ref); err != nil {
		return err
	}
	ctx := stream.Context()
	r, err := s.g.Logs(ctx, ref, req.GetFollow())
	if err != nil {
		return s.fail("logs", ref, err)
	}
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := stream.Send(&adminpb.SandboxLogsChunk{Data: bytes.Clone(buf[:n])}); serr != nil {
				return serr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return s.fail("logs", ref, err)
		}
	}
}
