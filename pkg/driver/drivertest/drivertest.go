// Package drivertest is the conformance suite every sandkey driver runs:
// the behaviour of driver.Driver that the gateway relies on, whatever the
// backend (process, docker, podman, vm).
//
// A driver's tests call Run with two constructors. newDriver returns a
// ready driver and arranges its cleanup through t. newSpec returns a spec
// for a new sandbox (a fresh SandboxID and InstanceID, its directories
// created under t's temporary directory) whose workload runs until it is
// stopped. The suite stops and deletes every sandbox it starts, also when
// it fails.
package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
)

const (
	// opTimeout bounds one driver call; container and VM backends may take
	// seconds to start or stop.
	opTimeout = 2 * time.Minute
	// runningTimeout bounds the wait for a started sandbox to report
	// running.
	runningTimeout = time.Minute
	// grace is the stop grace the suite gives; a sandbox that honours
	// SIGTERM ends well within it.
	grace = 10 * time.Second
)

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, newDriver func(t *testing.T) driver.Driver, newSpec func(t *testing.T) driver.Spec) {
	t.Run("DescribesItself", func(t *testing.T) {
		d := newDriver(t)
		if d.Name() == "" {
			t.Error("Name() is empty")
		}
		switch td := d.TokenDelivery(); td {
		case driver.DeliveryDirBind, driver.DeliveryDirVirtiofs, driver.DeliveryK8sSA:
		default:
			t.Errorf("TokenDelivery() = %q, want one of the declared deliveries", td)
		}
	})

	t.Run("LifecycleCreateStartStopStartDelete", func(t *testing.T) {
		d := newDriver(t)
		spec := newSpec(t)
		cleanupSandbox(t, d, spec.SandboxID)
		id := spec.SandboxID

		wantState(t, d, id, driver.StateMissing)
		must(t, "Create", d.Create(ctx(t), spec))
		must(t, "second Create", d.Create(ctx(t), spec))
		if st := wantState(t, d, id, driver.StateStopped); st.Exited {
			t.Errorf("created, never started sandbox reports an exit: %+v", st)
		}
		must(t, "Stop of a never started sandbox", d.Stop(ctx(t), id, grace))
		wantState(t, d, id, driver.StateStopped)

		must(t, "Start", d.Start(ctx(t), spec))
		waitRunning(t, d, spec)

		must(t, "Stop", d.Stop(ctx(t), id, grace))
		wantState(t, d, id, driver.StateStopped)
		must(t, "Stop of a stopped sandbox", d.Stop(ctx(t), id, grace))
		wantState(t, d, id, driver.StateStopped)

		spec.InstanceID += "-restart"
		must(t, "Start again", d.Start(ctx(t), spec))
		waitRunning(t, d, spec)

		must(t, "Stop", d.Stop(ctx(t), id, grace))
		must(t, "Delete", d.Delete(ctx(t), id))
		wantState(t, d, id, driver.StateMissing)
		must(t, "second Delete", d.Delete(ctx(t), id))
		wantState(t, d, id, driver.StateMissing)
	})

	t.Run("DeleteOfRunningSandboxEndsIt", func(t *testing.T) {
		d := newDriver(t)
		spec := newSpec(t)
		cleanupSandbox(t, d, spec.SandboxID)
		must(t, "Create", d.Create(ctx(t), spec))
		must(t, "Start", d.Start(ctx(t), spec))
		waitRunning(t, d, spec)
		must(t, "Delete", d.Delete(ctx(t), spec.SandboxID))
		wantState(t, d, spec.SandboxID, driver.StateMissing)
	})

	t.Run("UnknownSandboxIsMissingNotFoundAndDeletable", func(t *testing.T) {
		d := newDriver(t)
		id := newSpec(t).SandboxID // never created
		wantState(t, d, id, driver.StateMissing)
		if err := d.Stop(ctx(t), id, grace); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("Stop of unknown sandbox = %v, want driver.ErrNotFound", err)
		}
		must(t, "Delete of unknown sandbox", d.Delete(ctx(t), id))
	})
}

// cleanupSandbox deletes the sandbox when the test ends, so a failed test
// leaves nothing running.
func cleanupSandbox(t *testing.T, d driver.Driver, id string) {
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := d.Delete(c, id); err != nil {
			t.Errorf("cleanup: Delete %s: %v", id, err)
		}
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return c
}

func must(t *testing.T, op string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func wantState(t *testing.T, d driver.Driver, id string, want driver.State) driver.Status {
	t.Helper()
	st, err := d.Status(ctx(t), id)
	if err != nil {
		t.Fatalf("Status %s: %v", id, err)
	}
	if st.State != want {
		t.Fatalf("Status %s = %+v, want state %s", id, st, want)
	}
	return st
}

// waitRunning waits until the sandbox reports running with the spec's
// instance ID; a backend may report it running some time after Start.
func waitRunning(t *testing.T, d driver.Driver, spec driver.Spec) {
	t.Helper()
	c := ctx(t)
	deadline := time.Now().Add(runningTimeout)
	for {
		st, err := d.Status(c, spec.SandboxID)
		if err != nil {
			t.Fatalf("Status %s: %v", spec.SandboxID, err)
		}
		if st.State == driver.StateRunning {
			if st.InstanceID != spec.InstanceID {
				t.Fatalf("running sandbox %s reports instance %q, want %q", spec.SandboxID, st.InstanceID, spec.InstanceID)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s not running %s after Start: %+v", spec.SandboxID, runningTimeout, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
