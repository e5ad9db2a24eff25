package gatewaycmd

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// TestContainerDriversRefuseASupervisorTheyCannotMountAtStart pins the
// start-time check of the binary the docker and podman drivers mount into
// images: a missing or dynamically linked one stops the gateway with a
// usage error, before any sandbox could fail on it.
func TestContainerDriversRefuseASupervisorTheyCannotMountAtStart(t *testing.T) {
	for _, drv := range []string{"docker", "podman"} {
		for _, tc := range []struct {
			supervisor string
			want       string
		}{
			{filepath.Join(t.TempDir(), "missing"), "no such file"},
			{"/bin/sh", "dynamically linked"},
		} {
			t.Run(drv+" "+tc.want, func(t *testing.T) {
				var o driverOptions
				fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
				addDriverFlags(fs, &o)
				if err := fs.Parse([]string{"--drivers", drv, "--supervisor", tc.supervisor}); err != nil {
					t.Fatal(err)
				}
				env := driverEnv{stateDir: t.TempDir(), log: zap.NewNop(),
					supervisor: func() (string, error) { return findSupervisor(o.supervisorF) }}
				ds, err := buildDrivers(env, &o)
				if err == nil {
					closeDrivers(ds)
					t.Fatalf("driver %s built with supervisor %s", drv, tc.supervisor)
				}
				var usage usageError
				if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.supervisor) {
					t.Errorf("buildDrivers = %v; want a usage error naming %s and saying %q", err, tc.supervisor, tc.want)
				}
			})
		}
	}
}
