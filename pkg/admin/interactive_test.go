package admin

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

// TestExecRefusesMalformedStarts pins what the interactive Exec refuses
// before it asks the gateway anything (the server has none here).
func TestExecRefusesMalformedStarts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminpb.RegisterAdminServer(srv, NewServer(nil, nil))
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := adminpb.NewAdminClient(conn)

	start := func(req *adminpb.ExecSandboxRequest) *adminpb.ExecInput {
		return &adminpb.ExecInput{Msg: &adminpb.ExecInput_Start{Start: &adminpb.ExecStart{Request: req, Stdin: true}}}
	}
	tests := []struct {
		name  string
		first *adminpb.ExecInput
		want  string
	}{
		{"stdin before start", &adminpb.ExecInput{Msg: &adminpb.ExecInput_Stdin{Stdin: []byte("ls\n")}}, "first message must be start"},
		{"no sandbox", start(&adminpb.ExecSandboxRequest{Argv: []string{"sh"}}), "no sandbox given"},
		{"stdin in the request", start(&adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"cat"}, Stdin: []byte("x"), HasStdin: true}),
			"send it as stdin messages"},
		{"no command", start(&adminpb.ExecSandboxRequest{Sandbox: "web"}), "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := c.Exec(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tt.first); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Exec = %v, want InvalidArgument mentioning %q", err, tt.want)
			}
		})
	}
}
