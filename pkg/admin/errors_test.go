package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/session"
)

func TestToStatusMapsGatewayErrorsToCodesTheCallerCanActOn(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"unknown sandbox", fmt.Errorf("sandbox %q: %w", "web", gateway.ErrNotFound), codes.NotFound},
		{"unknown to sessions", fmt.Errorf("sandbox web: %w", session.ErrUnknownSandbox), codes.NotFound},
		{"name taken", fmt.Errorf("create sandbox web: %w", gateway.ErrExists), codes.AlreadyExists},
		{"invalid", fmt.Errorf("create sandbox web: %w: empty driver", gateway.ErrInvalid), codes.InvalidArgument},
		{"no session", fmt.Errorf("exec \"ls\" in web: %w", session.ErrNotConnected), codes.FailedPrecondition},
		{"no generation", fmt.Errorf("sandbox web: %w", gateway.ErrNoGeneration), codes.FailedPrecondition},
		{"key state", fmt.Errorf("sandbox web: %w", gateway.ErrKeyState), codes.FailedPrecondition},
		{"session ended", fmt.Errorf("exec in web: %w", session.ErrSessionEnded), codes.Aborted},
		{"shutting down", fmt.Errorf("exec in web: %w", session.ErrServerClosed), codes.Unavailable},
		{"caller went away", fmt.Errorf("start web: %w", context.Canceled), codes.Canceled},
		{"deadline", fmt.Errorf("start web: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"anything else", errors.New("driver process start web: exec format error"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := toStatus(tt.err, "web")
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code of %q = %s, want %s", tt.err, got, tt.want)
			}
			if msg := status.Convert(err).Message(); msg != tt.err.Error() {
				t.Errorf("message = %q, want the gateway's %q unchanged", msg, tt.err)
			}
		})
	}
}

func TestToStatusNamesTheSandboxWhenTheErrorDoesNot(t *testing.T) {
	err := toStatus(fmt.Errorf("get sandbox 0123: %w", gateway.ErrNotFound), "web")
	msg := status.Convert(err).Message()
	if !strings.HasPrefix(msg, `sandbox "web": `) {
		t.Errorf("message %q does not name the sandbox", msg)
	}
	if toStatus(nil, "web") != nil {
		t.Error("toStatus(nil) is not nil")
	}
	if msg := status.Convert(toStatus(errors.New("disk full"), "")).Message(); msg != "disk full" {
		t.Errorf("message without a sandbox = %q", msg)
	}
}
