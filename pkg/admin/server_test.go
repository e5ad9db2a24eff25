package admin

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/session"
)

func TestExecRequestRefusesMalformedRequests(t *testing.T) {
	tests := []struct {
		name string
		req  *adminpb.ExecSandboxRequest
		want string
	}{
		{"no command", &adminpb.ExecSandboxRequest{Sandbox: "web"}, "no command"},
		{"empty command", &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{""}}, "no command"},
		{"env without =", &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"env"}, Env: []string{"MODE"}}, "not KEY=VALUE"},
		{"env without a name", &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"env"}, Env: []string{"=x"}}, "not KEY=VALUE"},
		{"stdin too large", &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"cat"},
			Stdin: make([]byte, session.MaxExecStdin+1), HasStdin: true}, "exceeds"},
		{"negative timeout", &adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"true"},
			Timeout: durationpb.New(-time.Second)}, "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := execRequest(tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("execRequest = %v, want InvalidArgument mentioning %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), `"web"`) {
				t.Errorf("error %q does not name the sandbox", err)
			}
		})
	}
}

func TestExecRequestTellsEmptyStdinFromNone(t *testing.T) {
	none, _, err := execRequest(&adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"cat"}})
	if err != nil || none.Stdin != nil {
		t.Fatalf("without has_stdin: stdin %v, err %v; want nil stdin", none.Stdin, err)
	}
	empty, _, err := execRequest(&adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"cat"}, HasStdin: true})
	if err != nil || empty.Stdin == nil || len(empty.Stdin) != 0 {
		t.Fatalf("with has_stdin and no bytes: stdin %v, err %v; want empty, not nil", empty.Stdin, err)
	}
	full, timeout, err := execRequest(&adminpb.ExecSandboxRequest{Sandbox: "web", Argv: []string{"cat"},
		Env: []string{"A=1"}, Stdin: []byte("hi"), HasStdin: true, Timeout: durationpb.New(3 * time.Second)})
	if err != nil || string(full.Stdin) != "hi" || timeout != 3*time.Second || full.Env[0] != "A=1" {
		t.Fatalf("full request = %+v, timeout %s, err %v", full, timeout, err)
	}
}
