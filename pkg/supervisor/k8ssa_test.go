package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/testclock"
)

// podDriver is a stand-in for the kubernetes driver behind a real
// gateway: the process driver runs the sandbox, every start is run
// "run-1", and a credential "run-1/<n>" (a projected token renewed n
// times) proves it. It records what each exchange presented.
type podDriver struct {
	*process.Driver
	mu        sync.Mutex
	presented []string
}

func (d *podDriver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryK8sSA }

func (d *podDriver) StartRun(ctx context.Context, spec driver.Spec) (string, error) {
	return "run-1", d.Driver.Start(ctx, spec)
}

func (d *podDriver) VerifyCredential(_ context.Context, _, credential string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.presented = append(d.presented, credential)
	run, _, _ := strings.Cut(credential, "/")
	return run, nil
}

func (d *podDriver) exchanges() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.presented...)
}

func TestK8sSAExchangesAtStartOnRefusalAndOnExpiryWithTheNewestProjectedToken(t *testing.T) {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	proc, err := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: filepath.Join(dir, "process")})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close()
	pods := &podDriver{Driver: proc}
	clk := testclock.New(time.Now())
	ctx := context.Background()
	g, err := gateway.Open(ctx, gateway.Config{StateDir: filepath.Join(dir, "state"), Lifetime: time.Minute,
		Drivers: map[string]driver.Driver{"k8s": pods}, DefaultDriver: "k8s", Now: clk.Now, Jitter: func() float64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.ServeShared("tcp", l); err != nil {
		t.Fatal(err)
	}
	sb, err := g.Create(ctx, gateway.CreateRequest{Name: "pod", Start: true, Spec: gateway.Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(ctx, sb.ID)

	projected := filepath.Join(dir, "k8s-sa")
	w, err := tokendir.NewWriter(projected)
	if err != nil {
		t.Fatal(err)
	}
	renew := func(n int) { // what the kubelet does: the ..data swap
		if err := w.Write(map[string][]byte{tokendir.TokenFile: fmt.Appendf(nil, "run-1/%d", n)}); err != nil {
			t.Fatal(err)
		}
	}
	renew(1)
	src, err := newExchangeSource(ctx, Config{SandboxID: sb.ID, TokenDir: projected, Gateway: "tcp://" + l.Addr().String(),
		PollInterval: time.Hour, Now: clk.Now}, nil, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	waitFor(t, "the exchange at start", func() bool { return src.Current() != nil })
	if got := pods.exchanges(); got[0] != "run-1/1" {
		t.Fatalf("exchanges presented %v", got)
	}

	// The gateway refuses the token: the newest projected token goes at once.
	renew(2)
	src.MarkRejected()
	waitFor(t, "a re-exchange after a refusal", func() bool { return last(pods.exchanges()) == "run-1/2" })

	// The token expires while nothing talks: the next call exchanges first.
	held := src.Current()
	renew(3)
	clk.Add(2 * time.Minute)
	md, err := src.PerRPCCredentials().GetRequestMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last(pods.exchanges()) != "run-1/3" || src.Current().Gen() <= held.Gen() || md["authorization"] != "Bearer "+src.Current().Raw() {
		t.Fatalf("after expiry: exchanges %v, gen %d (was %d): want a re-exchange of the renewed token and its new token on the call",
			pods.exchanges(), src.Current().Gen(), held.Gen())
	}
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
