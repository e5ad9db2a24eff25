package session

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

func TestListenSandboxSocketSetsModesWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	base, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	dir := filepath.Join(base, "sb")
	if err := os.Mkdir(dir, 0o777); err != nil { // an existing, too open dir
		t.Fatal(err)
	}
	l, err := ListenSandboxSocket(dir, "sb")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, filepath.Join(dir, guest.SocketName): os.ModeSocket | 0o600} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %s, want %s", path, fi.Mode(), want)
		}
	}
}

func TestListenSandboxSocketReplacesStaleSocketOnly(t *testing.T) {
	base, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	dir := filepath.Join(base, "sb")
	l, err := ListenSandboxSocket(dir, "sb")
	if err != nil {
		t.Fatal(err)
	}
	// Leave the socket file behind, as a crashed gateway would.
	l.(*attestedListener).Listener.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	if _, err := os.Lstat(filepath.Join(dir, guest.SocketName)); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	l, err = ListenSandboxSocket(dir, "sb")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	_ = l.Close()

	if err := os.WriteFile(filepath.Join(dir, guest.SocketName), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenSandboxSocket(dir, "sb"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v, want a refusal to remove a regular file", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, guest.SocketName)); string(b) != "precious" {
		t.Fatal("regular file in the way was touched")
	}
	if _, err := ListenSandboxSocket(dir, ""); err == nil {
		t.Fatal("empty sandbox id accepted")
	}
}

// attestationEcho reports the caller's attested sandbox as the exit
// report's instance id, so a test can read what the server saw.
type attestationEcho struct {
	sessionpb.UnimplementedSupervisorSessionServer
}

func (attestationEcho) ReportExit(ctx context.Context, _ *sessionpb.ReportExitRequest) (*sessionpb.ReportExitResponse, error) {
	id, ok := AttestedSandbox(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "not attested")
	}
	return nil, status.Error(codes.AlreadyExists, id)
}

func (attestationEcho) Connect(stream sessionpb.SupervisorSession_ConnectServer) error {
	<-stream.Context().Done()
	return nil
}

func TestOneServerAttestsEachSocketForItsSandboxOnly(t *testing.T) {
	base, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	g := grpc.NewServer(ServerOptions(nil)...)
	sessionpb.RegisterSupervisorSessionServer(g, attestationEcho{})
	ls := NewListeners(g, nil)
	defer g.Stop()
	defer ls.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.AddShared("tcp", tcp); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, id := range []string{"sb-1", "sb-2", "sb-3"} {
		p, err := ls.AddSandbox(filepath.Join(base, id), id)
		if err != nil {
			t.Fatal(err)
		}
		paths[id] = p
	}
	if ls.Len() != 4 {
		t.Fatalf("serving %d listeners, want 4", ls.Len())
	}
	attested := func(target string) (string, error) {
		rpc := dialRaw(t, target)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := rpc.ReportExit(ctx, &sessionpb.ReportExitRequest{}, grpc.WaitForReady(true))
		if status.Code(err) == codes.AlreadyExists {
			return status.Convert(err).Message(), nil
		}
		return "", err
	}
	for id, p := range paths {
		if got, err := attested("unix://" + p); err != nil || got != id {
			t.Fatalf("socket of %s attested as %q (%v)", id, got, err)
		}
	}
	if _, err := attested("tcp://" + tcp.Addr().String()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("shared TCP listener: %v, want not attested", err)
	}

	// Removing a sandbox's socket removes the file and cuts its connections.
	rpc := dialRaw(t, "unix://"+paths["sb-2"])
	stream, err := rpc.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.RemoveSandbox("sb-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(paths["sb-2"]); !os.IsNotExist(err) {
		t.Fatalf("socket file still there: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream over a removed socket: %v", err)
	}
	if got, err := attested("unix://" + paths["sb-1"]); err != nil || got != "sb-1" {
		t.Fatalf("other sockets disturbed: %q %v", got, err)
	}
}

// A second gateway on the same state directory must not take a live
// sandbox socket from the first: the socket is only replaced once nothing
// answers on it.
func TestListenSandboxSocketLeavesALiveSocketAlone(t *testing.T) {
	base, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	dir := filepath.Join(base, "sb")
	live, err := ListenSandboxSocket(dir, "sb")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := live.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	before, _ := os.Lstat(filepath.Join(dir, guest.SocketName))
	if _, err := ListenSandboxSocket(dir, "sb"); err == nil || !strings.Contains(err.Error(), "another gateway") {
		t.Fatalf("err = %v, want a refusal naming the live gateway", err)
	}
	if after, err := os.Lstat(filepath.Join(dir, guest.SocketName)); err != nil || !os.SameFile(before, after) {
		t.Fatalf("live socket replaced or removed: %v", err)
	}
	<-accepted // the probe itself
	c, err := net.Dial("unix", filepath.Join(dir, guest.SocketName))
	if err != nil {
		t.Fatalf("live socket no longer answers: %v", err)
	}
	c.Close()
}
