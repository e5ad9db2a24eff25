package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// Hello opens a session at target (as session.Dial takes it) presenting
// bearer, says Hello for sandboxID as instanceID, and reports the
// gateway's answer: nil when it accepted the session, else an error with
// the rejection's reason. It is how a test checks that a credential is
// (no longer) accepted, e.g. a deleted sandbox's.
func Hello(ctx context.Context, target, bearer, sandboxID, instanceID string, opts ...session.DialOption) error {
	conn, err := session.Dial(ctx, target, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer))
	defer cancel()
	stream, err := sessionpb.NewSupervisorSessionClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: sandboxID, InstanceId: instanceID, Version: "sessiontest"}}}); err != nil {
		return err
	}
	m, err := stream.Recv()
	switch {
	case err != nil:
		return err
	case m.GetAccepted() != nil:
		return nil
	case m.GetRejected() != nil:
		return errors.New("rejected: " + strings.TrimSpace(m.GetRejected().GetReason()))
	}
	return fmt.Errorf("unexpected first answer %v", m)
}
