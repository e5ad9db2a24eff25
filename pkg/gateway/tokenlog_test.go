package gateway

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/metadata"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// TestNoLogLineRefusalOrMetricCarriesAToken attacks a real gateway the way
// a sandbox can (another sandbox's token on its own socket, a tampered
// token, a superseded one, the shared listener with the wrong bearer) and
// checks that no log entry at any level, no refusal sent back and no
// metric holds any token the gateway minted, whole or by its signature.
func TestNoLogLineRefusalOrMetricCarriesAToken(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	e.reopen(func(c *Config) { c.Logger, c.Registerer = zap.New(core), reg })
	ctx := context.Background()
	a, b := e.create("a"), e.create("b")

	var minted []string
	mint := func(id string) string {
		if _, err := e.g.Rotate(ctx, id); err != nil {
			t.Fatal(err)
		}
		raw := e.dirTokenRaw(id)
		minted = append(minted, raw)
		return raw
	}
	minted = append(minted, e.dirTokenRaw(a.ID), e.dirTokenRaw(b.ID))
	oldA := minted[0]
	for range 3 {
		mint(a.ID)
	}
	tokB := mint(b.ID)
	tampered := tokB[:len(tokB)-2] + "AA"

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.g.ServeShared("tcp", l); err != nil {
		t.Fatal(err)
	}
	socketA := "unix://" + filepath.Join(e.g.socketDir(a.ID), guest.SocketName)
	shared := "tcp://" + l.Addr().String()
	var reasons []string
	for _, tc := range []struct{ target, bearer, hello string }{
		{socketA, tokB, a.ID},         // B's token on A's socket
		{socketA, tokB, b.ID},         // ... claiming to be B
		{socketA, tampered, a.ID},     // a token with a bad signature
		{socketA, oldA, a.ID},         // a superseded token: answered, not refused
		{shared, tokB, a.ID},          // B's bearer for A on the shared listener
		{shared, tampered, b.ID},      // a tampered bearer there
		{shared, oldA, a.ID},          // a superseded bearer there
		{shared, "not.a.token", b.ID}, // garbage
	} {
		reasons = append(reasons, hostileHello(t, tc.target, tc.bearer, tc.hello))
	}
	e.clock.Add(lifetime + time.Minute) // every token now expired
	reasons = append(reasons, hostileHello(t, shared, minted[len(minted)-1], b.ID))

	var text []string
	for _, entry := range logs.All() {
		text = append(text, fmt.Sprintf("%s %v", entry.Message, entry.ContextMap()))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		text = append(text, mf.String())
	}
	text = append(text, reasons...)
	if logs.Len() == 0 || len(reasons) == 0 {
		t.Fatal("nothing logged or refused: the test checks nothing")
	}
	for i, raw := range minted {
		sig := raw[strings.LastIndexByte(raw, '.')+1:]
		for _, s := range text {
			if strings.Contains(s, sig) {
				t.Errorf("minted token %d appears in: %.300s", i, s)
			}
		}
	}
}

// hostileHello opens a session on target with bearer and a Hello for
// sandbox, and returns what the gateway answered: the refusal's reason,
// or "accepted".
func hostileHello(t *testing.T, target, bearer, sandbox string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := session.Dial(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
	stream, err := sessionpb.NewSupervisorSessionClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{
		Hello: &sessionpb.Hello{SandboxId: sandbox, InstanceId: "hostile"}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		return err.Error()
	}
	if r := m.GetRejected(); r != nil {
		return r.GetReason()
	}
	return "accepted"
}
