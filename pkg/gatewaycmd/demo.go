package gatewaycmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/pkg/memroot"
)

// demoLifetime is the token lifetime of `serve --demo`: short enough that
// rotation shows within a minute, long enough to read the output.
const demoLifetime = 30 * time.Second

const demoName = "demo"

// startDemo makes sure a sandbox named "demo" exists and runs, and tells
// the operator how to look at it.
func startDemo(ctx context.Context, gw *gateway.Gateway, g *globals, o *serveOptions, log *zap.Logger) error {
	sb, err := gw.Get(ctx, demoName)
	switch {
	case errors.Is(err, gateway.ErrNotFound):
		sb, err = gw.Create(ctx, gateway.CreateRequest{
			Name: demoName, Driver: o.defaultDriver, Start: true,
			Spec: gateway.Spec{Command: []string{"/bin/sh", "-c", "echo demo workload up; while :; do sleep 3600; done"}},
		})
	case err == nil && sb.State != gateway.StateRunning:
		sb, err = gw.Start(ctx, demoName)
	}
	if err != nil {
		return fmt.Errorf("demo sandbox: %w", err)
	}
	self, _ := os.Executable()
	fmt.Fprintf(g.stderr, `
sandkey demo: sandbox %q (%s) runs on the %s driver; its token lives %s and rotates at about half that.
Watch the generation rise:     %s --state-dir %s sandbox list
Run a command inside:          %s --state-dir %s sandbox exec demo -- sh -c 'echo hello from $SANDKEY_SANDBOX_ID'
Its token directory:           %s (%s)
Open a shell inside:           %s --state-dir %s sandbox exec -it demo -- sh
Remove it (stops its process): %s --state-dir %s sandbox delete demo
Stop the gateway with Ctrl-C; the sandbox keeps running and the next gateway finds it.

`, sb.Name, sb.ID, sb.Driver, o.lifetime, self, g.stateDir, self, g.stateDir,
		filepath.Join(gw.TokenRoot().Path, sb.ID), memoryNote(gw.TokenRoot()), self, g.stateDir, self, g.stateDir)
	log.Info("demo sandbox running", zap.String("sandbox", sb.ID), zap.Uint64("gen", sb.LatestGen))
	return nil
}

// memoryNote says, for a person, where the token directories' bytes live.
func memoryNote(root memroot.Root) string {
	if root.MemoryBacked {
		return "in memory, " + root.FSType
	}
	return "on disk: see the warning above"
}
