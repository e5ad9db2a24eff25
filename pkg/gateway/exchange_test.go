package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/testclock"
)

// credentialDriver is a stand-in for the kubernetes driver: the real
// process driver runs the sandbox, each start is a run named run-N, and
// the credential "cred:<run>" proves run <run>; "down" is a backend that
// cannot answer and anything else is refused.
type credentialDriver struct {
	*process.Driver
	mu   sync.Mutex
	runs int
}

func (d *credentialDriver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryK8sSA }

func (d *credentialDriver) StartRun(ctx context.Context, spec driver.Spec) (string, error) {
	if err := d.Driver.Start(ctx, spec); err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runs++
	return fmt.Sprintf("run-%d", d.runs), nil
}

func (d *credentialDriver) VerifyCredential(_ context.Context, _, credential string) (string, error) {
	switch {
	case credential == "down":
		return "", fmt.Errorf("TokenReview: %w", session.ErrExchangeUnavailable)
	case len(credential) > 5 && credential[:5] == "cred:":
		return credential[5:], nil
	}
	return "", session.RefuseExchange(session.ExchangeNotAuthenticated, "not a credential")
}

func newExchangeEnv(t *testing.T) (*Gateway, *testclock.Clock) {
	t.Helper()
	dir := shortTempDir(t)
	proc, err := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: filepath.Join(dir, "process")})
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now().Truncate(time.Second))
	g, err := Open(context.Background(), Config{StateDir: filepath.Join(dir, "state"), Lifetime: lifetime, StopGrace: time.Second,
		Drivers:       map[string]driver.Driver{"k8s": &credentialDriver{Driver: proc}, "process": proc},
		DefaultDriver: "k8s", Now: clk.Now, Jitter: func() float64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if all, err := g.List(ctx); err == nil {
			for _, sb := range all {
				g.Delete(ctx, sb.ID)
			}
		}
		g.Close()
		proc.Close()
	})
	return g, clk
}

func refusedFor(t *testing.T, err error, reason string) {
	t.Helper()
	var r *session.ExchangeRefusal
	if !errors.As(err, &r) || r.Reason != reason {
		t.Fatalf("exchange: %v; want a refusal for %s", err, reason)
	}
}

func TestExchangeAnswersOnlyTheRecordedRunAndWritesNoDirectory(t *testing.T) {
	g, _ := newExchangeEnv(t)
	ctx := context.Background()
	sb, err := g.Create(ctx, CreateRequest{Name: "pod", Start: true, Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.RunID != "run-1" {
		t.Fatalf("recorded run %q, want run-1", sb.RunID)
	}
	if _, err := tokendir.ReadToken(g.tokenDir(sb.ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a k8s-sa sandbox got a token directory: %v", err)
	}
	tok, err := g.Exchange(ctx, sb.ID, "cred:run-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Gen() != sb.LatestGen {
		t.Errorf("exchange returned gen %d; the latest, gen %d, is not due: no new mint", tok.Gen(), sb.LatestGen)
	}
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "cred:run-0")), session.ExchangeNotCurrentRun)
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "garbage")), session.ExchangeNotAuthenticated)
	if err := errOnly(g.Exchange(ctx, sb.ID, "down")); !errors.Is(err, session.ErrExchangeUnavailable) {
		t.Errorf("backend down: %v; want ErrExchangeUnavailable", err)
	}

	if _, err := g.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "cred:run-1")), session.ExchangeNotRunning)
	if _, err := g.Start(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "cred:run-1")), session.ExchangeNotCurrentRun)
	if _, err := g.Exchange(ctx, sb.ID, "cred:run-2"); err != nil {
		t.Errorf("the new run's credential: %v", err)
	}
	if err := g.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "cred:run-2")), session.ExchangeUnknownSandbox)
}

func TestExchangeMintsWhenTheLatestTokenIsDue(t *testing.T) {
	g, clk := newExchangeEnv(t)
	ctx := context.Background()
	sb, err := g.Create(ctx, CreateRequest{Name: "pod", Start: true, Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(lifetime) // past the rotation point and the expiry; no sweep ran
	tok, err := g.Exchange(ctx, sb.ID, "cred:run-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Gen() != sb.LatestGen+1 || !clk.Now().Before(tok.ExpiresAt()) {
		t.Errorf("exchange returned gen %d expiring %s; want a fresh gen %d", tok.Gen(), tok.ExpiresAt(), sb.LatestGen+1)
	}
}

func TestExchangeRefusesSandboxesOfDriversWithoutCredentials(t *testing.T) {
	g, _ := newExchangeEnv(t)
	ctx := context.Background()
	sb, err := g.Create(ctx, CreateRequest{Name: "local", Driver: "process", Start: true, Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		t.Fatal(err)
	}
	refusedFor(t, errOnly(g.Exchange(ctx, sb.ID, "cred:run-1")), session.ExchangeNotSupported)
}

func errOnly[T any](_ T, err error) error { return err }
