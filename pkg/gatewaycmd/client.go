package gatewaycmd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/admin"
	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

// adminAddress is the operator API the command talks to: --admin, or the
// socket in the state directory.
func (g *globals) adminAddress() (string, error) {
	if g.adminAddr != "" {
		return g.adminAddr, nil
	}
	dir, err := filepath.Abs(g.stateDir)
	if err != nil {
		return "", fmt.Errorf("state directory %s: %w", g.stateDir, err)
	}
	return filepath.Join(dir, AdminSocketName), nil
}

// withClient checks the output format, connects to the operator API and
// runs call with it, turning the API's errors into the CLI's.
func withClient(ctx context.Context, g *globals, call func(context.Context, adminpb.AdminClient) error) error {
	if err := checkOutput(g.output); err != nil {
		return err
	}
	addr, err := g.adminAddress()
	if err != nil {
		return err
	}
	client, conn, err := admin.Dial(ctx, addr, admin.DialOptions{TokenFile: g.adminToken, CAFile: g.adminCA})
	switch {
	case errors.Is(err, admin.ErrNoGateway):
		return fmt.Errorf("%w (start one with `gateway serve`, or pass --admin)", err)
	case errors.Is(err, admin.ErrDialSettings):
		return usageError{err}
	case err != nil:
		return err
	}
	defer conn.Close()
	return apiError(call(ctx, client), addr)
}

// remoteError is an operator API error as the CLI reports it: the
// gateway's message without gRPC's framing, and its code, which picks the
// exit status.
type remoteError struct {
	code codes.Code
	msg  string
}

func (e *remoteError) Error() string { return e.msg }

// apiError turns a gRPC status from the operator API at addr into an
// error that says what to do next. Other errors pass unchanged.
func apiError(err error, addr string) error {
	st, ok := status.FromError(err)
	if err == nil || !ok {
		return err
	}
	msg := st.Message()
	if admin.IsHolderError(st) {
		// The gateway answered: the replica holding the session did not,
		// or refused it; the message names that replica and its address.
		return &remoteError{code: st.Code(), msg: msg}
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return usageError{errors.New(msg)}
	case codes.NotFound:
		msg += " (see `gateway sandbox list`)"
	case codes.AlreadyExists:
		msg += " (choose another name, or delete the existing sandbox first)"
	case codes.Unauthenticated:
		msg = fmt.Sprintf("the gateway at %s refused the call: %s (check --admin-token-file)", addr, msg)
	case codes.PermissionDenied:
		msg = fmt.Sprintf("the gateway at %s refused the call: %s", addr, msg)
	case codes.Unavailable:
		msg = fmt.Sprintf("cannot reach the gateway at %s: %s (is `gateway serve` running? pass --admin to reach another)", addr, msg)
	case codes.Unimplemented:
		msg = fmt.Sprintf("the gateway at %s does not support this call (%s): upgrade it", addr, msg)
	}
	return &remoteError{code: st.Code(), msg: msg}
}

// isNotFound reports whether err says that the named sandbox does not
// exist.
func isNotFound(err error) bool {
	var re *remoteError
	return errors.As(err, &re) && re.code == codes.NotFound
}

// commandExit carries the exit status of a command run by `sandbox exec`
// out of Main, which exits with it and prints nothing more: the command
// has said what it had to say on its own stdout and stderr.
type commandExit struct{ code int }

func (e commandExit) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }

// ExitCode is the exit status the gateway binary exits with.
func (e commandExit) ExitCode() int { return e.code }
