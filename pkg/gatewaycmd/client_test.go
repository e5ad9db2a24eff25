package gatewaycmd

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
