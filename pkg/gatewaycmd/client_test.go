package gatewaycmd

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin"
)

func TestAPIErrorPicksTheExitCodeAndSaysWhatToDo(t *testing.T) {
	const addr = "/state/admin.sock"
	tests := []struct {
		name     string
		err      error
		wantExit int
		wantMsg  string
	}{
		{"not found", status.Error(codes.NotFound, `sandbox "web": not found`), ExitNotFound, "gateway sandbox list"},
		{"invalid", status.Error(codes.InvalidArgument, `sandbox name "-x": use letters`), ExitUsage, `sandbox name "-x": use letters`},
		{"exists", status.Error(codes.AlreadyExists, "create sandbox web: sandbox name already taken"), ExitFailure, "choose another name"},
		{"bad token", status.Error(codes.Unauthenticated, "invalid admin token"), ExitFailure, "--admin-token-file"},
		{"gone", status.Error(codes.Unavailable, "connection refused"), ExitFailure, "cannot reach the gateway at " + addr},
		{"precondition", status.Error(codes.FailedPrecondition, "sandbox web has no session"), ExitFailure, "sandbox web has no session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := apiError(tt.err, addr)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "rpc error") {
				t.Errorf("message %q shows gRPC's framing", err)
			}
			exit := ExitFailure
			var ue usageError
			switch {
			case errors.As(err, &ue):
				exit = ExitUsage
			case isNotFound(err):
				exit = ExitNotFound
			}
			if exit != tt.wantExit {
				t.Errorf("exit code %d, want %d", exit, tt.wantExit)
			}
		})
	}
	plain := errors.New("local failure")
	if apiError(plain, addr) != plain || apiError(nil, addr) != nil {
		t.Error("apiError changed an error that is not a gRPC status")
	}
}

// An error about the replica holding the session comes from a gateway
// that answered: the CLI must not send its user to another gateway, nor
// to the token it sent, which that gateway accepted.
func TestAPIErrorAboutTheSessionsHolderSaysSoAsIs(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.Unauthenticated} {
		msg := `sandbox "web": its session is held by gateway replica r2, whose operator API at 10.0.0.2:7444 is unavailable: connection refused`
		st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: admin.HolderErrorReason, Domain: admin.ErrorDomain})
		if err != nil {
			t.Fatal(err)
		}
		got := apiError(st.Err(), "10.0.0.1:7444")
		if got.Error() != msg {
			t.Errorf("%s about the holder: %q, want the gateway's message as is: %q", code, got, msg)
		}
		var re *remoteError
		if !errors.As(got, &re) || re.code != code {
			t.Errorf("%s about the holder lost its code: %#v", code, got)
		}
	}
}
