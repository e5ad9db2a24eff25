package badinput

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// sessionSnapshot is what must not change for a sandbox while others send
// hostile frames: its session and its token.
type sessionSnapshot struct {
	sessionID string
	gen       uint64
	jti       string
}

func (l *live) snapshot(t *testing.T, name string) sessionSnapshot {
	t.Helper()
	var s sessionSnapshot
	// The status file is rewritten every few seconds; wait for one that
	// names the session.
	eventually(t, 10*time.Second, name+"'s status names its session", func() bool {
		st := l.status(name)
		s = sessionSnapshot{sessionID: st.SessionID, gen: st.Gen, jti: st.JTI}
		return st.Connected && st.SessionID != ""
	})
	return s
}

// connect opens a Connect stream on a sandbox's socket, as a hostile
// process inside that sandbox could; md is added to the call.
func connect(t *testing.T, socket string, md ...string) (sessionpb.SupervisorSession_ConnectClient, func()) {
	t.Helper()
	conn, err := session.Dial(context.Background(), "unix://"+socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	stream, err := sessionpb.NewSupervisorSessionClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		conn.Close()
		t.Fatal(err)
	}
	return stream, func() { cancel(); conn.Close() }
}

func hello(sandboxID string) *sessionpb.SupervisorMessage {
	return &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
		SandboxId: sandboxID, InstanceId: "badinput", TokenGen: 1, Version: "badinput"}}}
}

// refusal is how a hostile stream ended: a Rejected message or a status.
type refusal struct {
	code   sessionpb.RejectCode // REJECT_CODE_UNSPECIFIED when the call failed instead
	status codes.Code
	reason string
}

// awaitRefusal reads the stream until the gateway refuses it; an
// Accepted fails the test.
func awaitRefusal(t *testing.T, stream sessionpb.SupervisorSession_ConnectClient) refusal {
	t.Helper()
	for {
		m, err := stream.Recv()
		if err != nil {
			st, _ := status.FromError(err)
			return refusal{status: st.Code(), reason: st.Message()}
		}
		switch msg := m.GetMsg().(type) {
		case *sessionpb.GatewayMessage_Rejected:
			return refusal{code: msg.Rejected.GetCode(), reason: msg.Rejected.GetReason()}
		case *sessionpb.GatewayMessage_Accepted:
			t.Fatalf("the gateway accepted a hostile session: %v", msg.Accepted)
		}
	}
}

// rawConn writes data on a sandbox's socket and reports whether the
// gateway closed the connection within 10 s.
func rawConn(t *testing.T, socket string, data []byte) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(data); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			continue // a GOAWAY or SETTINGS frame before the close
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("the gateway kept a connection that sent garbage open for 10 s")
		}
		return // EOF or reset: closed
	}
}

func TestHostileSessionFramesAreRefusedAndOtherSessionsAreUnaffected(t *testing.T) {
	l := startLive(t, "victim", "bystander", "decoy")
	victimSock := l.socket("victim")
	bystanderToken, err := tokendir.ReadToken(l.tokenDir("bystander"))
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]sessionSnapshot{"victim": l.snapshot(t, "victim"), "bystander": l.snapshot(t, "bystander")}
	junk := make([]byte, 8192)
	rand.Read(junk)

	t.Run("garbage bytes", func(t *testing.T) { rawConn(t, victimSock, junk) })
	t.Run("HTTP/2 preface then garbage frames", func(t *testing.T) {
		rawConn(t, victimSock, append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), junk...))
	})
	t.Run("HTTP/1 request", func(t *testing.T) {
		rawConn(t, victimSock, []byte("GET /jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"))
	})

	for _, tc := range []struct {
		name   string
		md     []string
		send   []*sessionpb.SupervisorMessage
		code   sessionpb.RejectCode
		status codes.Code // when the call fails instead of being Rejected
		reason string
	}{
		{name: "Hello for another sandbox", send: []*sessionpb.SupervisorMessage{hello(l.ids["bystander"])},
			code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "on the socket of sandbox"},
		{name: "first message not a Hello", send: []*sessionpb.SupervisorMessage{
			{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}},
			code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "first message is not a Hello"},
		{name: "no Hello at all", code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "no hello within"},
		{name: "Hello without a sandbox id", send: []*sessionpb.SupervisorMessage{hello("")},
			code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "no sandbox id"},
		{name: "Hello with an oversized field", send: []*sessionpb.SupervisorMessage{{Msg: &sessionpb.SupervisorMessage_Hello{
			Hello: &sessionpb.Hello{SandboxId: l.ids["victim"], InstanceId: strings.Repeat("i", 300)}}}},
			code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "longer than"},
		{name: "message over the size limit", send: []*sessionpb.SupervisorMessage{{Msg: &sessionpb.SupervisorMessage_Hello{
			Hello: &sessionpb.Hello{SandboxId: l.ids["victim"], Version: strings.Repeat("v", 2<<20)}}}},
			status: codes.ResourceExhausted},
		{name: "garbage bearer", md: []string{"authorization", "Bearer not-a-token"},
			send: []*sessionpb.SupervisorMessage{hello(l.ids["victim"])},
			code: sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, reason: "malformed"},
		{name: "another sandbox's valid token as bearer", md: []string{"authorization", "Bearer " + string(bystanderToken)},
			send: []*sessionpb.SupervisorMessage{hello(l.ids["victim"])},
			code: sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, reason: "sandbox_id"},
		{name: "two authorization headers", md: []string{"authorization", "Bearer a.b.c", "authorization", "Bearer d.e.f"},
			send: []*sessionpb.SupervisorMessage{hello(l.ids["victim"])},
			code: sessionpb.RejectCode_REJECT_CODE_UNAUTHENTICATED, reason: "more than one authorization header"},
		{name: "metadata naming another sandbox", md: []string{session.SandboxIDMetadata, l.ids["bystander"]},
			send: []*sessionpb.SupervisorMessage{hello(l.ids["victim"])},
			code: sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO, reason: "on a call for sandbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, done := connect(t, victimSock, tc.md...)
			defer done()
			for _, m := range tc.send {
				if err := stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			got := awaitRefusal(t, stream)
			if got.code != tc.code || (tc.status != codes.OK && got.status != tc.status) || !strings.Contains(got.reason, tc.reason) {
				t.Errorf("refused with %v / %v %q, want %v / %v %q", got.code, got.status, got.reason, tc.code, tc.status, tc.reason)
			}
		})
	}

	t.Run("exit report for another sandbox", func(t *testing.T) {
		conn, err := session.Dial(context.Background(), "unix://"+victimSock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = sessionpb.NewSupervisorSessionClient(conn).ReportExit(ctx,
			&sessionpb.ReportExitRequest{SandboxId: l.ids["bystander"], ExitCode: 1})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("exit report for another sandbox: %v, want PermissionDenied", err)
		}
	})

	// A second Hello on an accepted stream: the first one, without a
	// bearer, is accepted (the socket is the identity) and supersedes the
	// decoy's own session; the second is refused, and the decoy's
	// supervisor takes its session back.
	t.Run("second Hello", func(t *testing.T) {
		decoy := l.snapshot(t, "decoy")
		stream, done := connect(t, l.socket("decoy"))
		defer done()
		if err := stream.Send(hello(l.ids["decoy"])); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil || m.GetAccepted() == nil {
			t.Fatalf("first Hello on the decoy's socket: %v %v", m, err)
		}
		if err := stream.Send(hello(l.ids["decoy"])); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		// Refused for the second Hello, or already replaced by the decoy's
		// supervisor reconnecting: never accepted twice.
		got := awaitRefusal(t, stream)
		if got.code != sessionpb.RejectCode_REJECT_CODE_INVALID_HELLO && got.code != sessionpb.RejectCode_REJECT_CODE_SESSION_REPLACED &&
			got.status != codes.InvalidArgument {
			t.Errorf("second Hello ended the stream with %v / %v %q, want INVALID_HELLO (or SESSION_REPLACED)", got.code, got.status, got.reason)
		}
		done()
		eventually(t, 15*time.Second, "the decoy's supervisor has a session of its own again", func() bool {
			st := l.status("decoy")
			return st.Connected && st.SessionID != "" && st.SessionID != decoy.sessionID && st.Gen == decoy.gen
		})
	})

	// The gateway is up, and the victim's and bystander's sessions and
	// tokens are the ones they had before any of this.
	for _, sb := range l.list() {
		want, ok := before[sb.Name]
		if !ok {
			continue
		}
		got := l.snapshot(t, sb.Name)
		if got != want || !sb.Connected {
			t.Errorf("%s: session and token %+v (connected %v), want %+v unchanged", sb.Name, got, sb.Connected, want)
		}
	}
}
