package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/session"
)

// codeOf classifies an error of the gateway by the sentinel it wraps, so
// that the caller learns what it can do about it: NotFound and
// InvalidArgument are the caller's to fix, FailedPrecondition asks for
// another operation first, Unavailable for a retry; Internal is the
// gateway's fault.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, gateway.ErrNotFound), errors.Is(err, session.ErrUnknownSandbox), errors.Is(err, driver.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, gateway.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, gateway.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, session.ErrNotConnected), errors.Is(err, gateway.ErrNoGeneration), errors.Is(err, gateway.ErrAlreadyRunning),
		errors.Is(err, gateway.ErrKeyState), errors.Is(err, gateway.ErrNoLogs),
		errors.Is(err, session.ErrExecUnsupported):
		return codes.FailedPrecondition
	case errors.Is(err, session.ErrSessionEnded):
		return codes.Aborted
	case errors.Is(err, session.ErrServerClosed):
		return codes.Unavailable
	}
	return codes.Internal
}

// toStatus turns a gateway error about sandbox (an id or name; empty when
// the operation concerns no sandbox) into a gRPC status error whose
// message names the sandbox.
func toStatus(err error, sandbox string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if sandbox != "" && !strings.Contains(msg, sandbox) {
		msg = fmt.Sprintf("sandbox %q: %s", sandbox, msg)
	}
	return status.Error(codeOf(err), msg)
}

// invalidf is the error of a request the server refuses before asking the
// gateway anything.
func invalidf(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
