package gatewaycmd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

// stdinPiece is the most stdin one message carries.
const stdinPiece = 32 << 10

// execInteractive is `sandbox exec -i` and `-t`: stdin streamed as it
// comes, and with -t a terminal in the sandbox, this one in raw mode.
func execInteractive(ctx context.Context, g *globals, req *adminpb.ExecSandboxRequest, streamStdin, tty bool, stdin io.Reader) error {
	start := &adminpb.ExecStart{Request: req, Stdin: streamStdin, Tty: tty}
	var termFile *os.File
	if tty {
		f, ok := stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return Usagef("-t: standard input is not a terminal; to pipe input, use -i alone")
		}
		termFile = f
		if cols, rows, err := term.GetSize(int(f.Fd())); err == nil {
			start.Window = &adminpb.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}
		}
		if t := os.Getenv("TERM"); t != "" {
			req.Env = append([]string{"TERM=" + t}, req.Env...)
		}
	}
	return withClient(ctx, g, func(ctx context.Context, c adminpb.AdminClient) error {
		if termFile != nil {
			// Raw: every key, ^C and ^D included, goes to the command.
			old, err := term.MakeRaw(int(termFile.Fd()))
			if err != nil {
				return fmt.Errorf("put the terminal in raw mode: %w", err)
			}
			defer term.Restore(int(termFile.Fd()), old)
		}
		var in io.Reader
		if streamStdin {
			in = stdin
		}
		return runInteractiveExec(ctx, c, start, in, termFile, g.stdout, g.stderr)
	})
}

// runInteractiveExec runs start on the gateway's Exec call: stdin (when
// not nil) and the terminal's sizes (when tty is not nil) go up as they
// come, output and the exit come down.
func runInteractiveExec(ctx context.Context, c adminpb.AdminClient, start *adminpb.ExecStart, stdin io.Reader, tty *os.File,
	stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Exec(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Start{Start: start}}); err != nil {
		if _, rerr := stream.Recv(); rerr != nil && err == io.EOF {
			return rerr // the status that ended the call
		}
		return err
	}
	var pieces <-chan []byte
	if stdin != nil {
		pieces = readPieces(ctx, stdin)
	}
	var winch chan os.Signal
	if tty != nil {
		winch = make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sendInput(ctx, stream, pieces, winch, tty)
	}()
	defer func() {
		cancel()
		<-sent
	}()
	return printExecOutput(stream.Recv, start.GetRequest(), stdout, stderr)
}

// readPieces reads r in a goroutine and hands its pieces over; the channel
// closes at r's end. A read from a terminal cannot be interrupted: the
// goroutine may stay blocked in one after the exec ended, until the
// process exits.
func readPieces(ctx context.Context, r io.Reader) <-chan []byte {
	pieces := make(chan []byte)
	go func() {
		defer close(pieces)
		buf := make([]byte, stdinPiece)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				select {
				case pieces <- bytes.Clone(buf[:n]):
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return pieces
}

// sendInput is the one sender on stream (gRPC allows one): stdin pieces,
// the half-close at stdin's end, and a resize per SIGWINCH.
func sendInput(ctx context.Context, stream grpc.BidiStreamingClient[adminpb.ExecInput, adminpb.ExecSandboxResponse],
	pieces <-chan []byte, winch <-chan os.Signal, tty *os.File) {
	for {
		var msg *adminpb.ExecInput
		select {
		case <-ctx.Done():
			return
		case p, ok := <-pieces:
			if !ok {
				pieces = nil
				if stream.CloseSend() != nil {
					return
				}
				continue
			}
			msg = &adminpb.ExecInput{Msg: &adminpb.ExecInput_Stdin{Stdin: p}}
		case <-winch:
			cols, rows, err := term.GetSize(int(tty.Fd()))
			if err != nil {
				continue
			}
			msg = &adminpb.ExecInput{Msg: &adminpb.ExecInput_Resize{Resize: &adminpb.WindowSize{Rows: uint32(rows), Cols: uint32(cols)}}}
		}
		if stream.Send(msg) != nil {
			return // the call ended; its status comes from Recv
		}
	}
}

func newSandboxLogsCommand(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID|NAME [-f]",
		Short: "Print a sandbox's workload output, as its driver keeps it",
		Long: `Print a sandbox's workload output as its driver keeps it: the process
driver's log file, the container engine's log, the microVM's console, or the
log of the sandbox's current pod on Kubernetes. With
-f, keep printing new output as it comes until interrupted.`,
		Example: `  gateway sandbox logs web
  gateway sandbox logs -f web`,
		Args: oneSandbox,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c adminpb.AdminClient) error {
				stream, err := c.SandboxLogs(ctx, &adminpb.SandboxLogsRequest{Sandbox: args[0], Follow: follow})
				if err != nil {
					return err
				}
				for {
					chunk, err := stream.Recv()
					if err == io.EOF {
						return nil
					}
					if err != nil {
						if ctx.Err() != nil {
							return nil // interrupted while following
						}
						return err
					}
					if _, err := g.stdout.Write(chunk.GetData()); err != nil {
						return fmt.Errorf("write logs: %w", err)
					}
				}
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output as it comes")
	return cmd
}
