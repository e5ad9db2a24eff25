// Package driver defines the one interface every compute backend
// implements — process, docker, podman, vm, kubernetes. What a driver and
// the supervisor inside the sandbox it runs must agree on (SANDKEY_*
// names, in-sandbox paths, the VM boot file) is package guest.
//
// A driver creates, starts, stops, deletes and inspects sandboxes. It never
// writes a token: the gateway's atomic writer fills the token directory
// before it calls Start, and the driver only makes that directory visible
// to the sandbox, read-only, the way its TokenDelivery says. Drivers are
// registered in one place (cmd/gateway); the gateway core knows only this
// interface.
package driver

import (
	"context"
	"errors"
	"io"
	"time"
)

// TokenDelivery says how a driver makes the token directory visible inside
// its sandboxes.
type TokenDelivery string

const (
	// DeliveryDirBind: the host directory itself, or a read-only bind mount of it.
	DeliveryDirBind TokenDelivery = "dir-bind"
	// DeliveryDirVirtiofs: a read-only virtio-fs share; the guest must poll.
	DeliveryDirVirtiofs TokenDelivery = "dir-virtiofs"
	// DeliveryK8sSA: a projected ServiceAccount token exchanged for a sandbox token.
	DeliveryK8sSA TokenDelivery = "k8s-sa"
)

// State is what a driver observes of a sandbox.
type State string

const (
	StateRunning State = "running"
	StateStopped State = "stopped"
	// StateMissing: the driver knows nothing of the sandbox (removed behind
	// the gateway's back, or never created).
	StateMissing State = "missing"
)

// Spec is everything a driver needs to run one sandbox. Paths are on the
// gateway's host.
type Spec struct {
	SandboxID  string
	Name       string
	InstanceID string // new on every start; the supervisor reports it back
	Image      string // container image or VM guest image; empty for process
	Command    []string
	// Env is the workload's environment as the user asked; drivers drop
	// every SANDKEY_* entry from it (see StripReserved) and add SandboxEnv.
	Env map[string]string
	// SandboxEnv holds the SANDKEY_* variables the gateway sets for the
	// supervisor (see the Env* constants).
	SandboxEnv map[string]string
	TokenDir   string // the sandbox's token directory, written by the gateway only
	SocketDir  string // directory holding the sandbox's attested gateway socket
	StateDir   string // the driver's own per-sandbox directory (logs, pid files)
}

// Status is a driver's view of one sandbox.
type Status struct {
	State      State
	InstanceID string
	ExitCode   int // valid when State is StateStopped and Exited is true
	Exited     bool
	Detail     string
}

// Driver runs sandboxes on one backend.
type Driver interface {
	Name() string
	TokenDelivery() TokenDelivery
	// Create prepares a sandbox without starting it. Idempotent.
	Create(ctx context.Context, spec Spec) error
	// Start runs a created or stopped sandbox. The token directory already
	// holds a fresh token when it is called.
	Start(ctx context.Context, spec Spec) error
	// Stop ends the sandbox, SIGTERM then SIGKILL after grace, keeping what
	// a later Start needs.
	Stop(ctx context.Context, sandboxID string, grace time.Duration) error
	// Delete removes everything the driver made for the sandbox. Idempotent.
	Delete(ctx context.Context, sandboxID string) error
	// Status reports the sandbox's state; StateMissing when unknown.
	Status(ctx context.Context, sandboxID string) (Status, error)
}

// Logger is implemented by drivers that keep their workloads' output:
// the gateway checks for it with a type assertion.
type Logger interface {
	// Logs returns the sandbox's workload output as the driver keeps it
	// (a log file, the engine's log, the guest's console), from its
	// start. With follow, the reader keeps returning new output as it
	// comes, until ctx ends or it is closed; without, it ends at what
	// there is now. ErrNotFound for a sandbox the driver does not know.
	Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error)
}

// ErrNotFound is returned by drivers for a sandbox they do not know.
var ErrNotFound = errors.New("sandbox not found by driver")

// RunStarter is implemented by drivers whose backend names each run itself
// (Kubernetes: the pod's UID). The gateway calls StartRun instead of Start
// and records the name as the sandbox's current run.
type RunStarter interface {
	StartRun(ctx context.Context, spec Spec) (runID string, err error)
}

// CredentialVerifier is implemented by drivers of DeliveryK8sSA: their
// sandboxes prove who they are with a credential of the backend (a pod's
// projected ServiceAccount token), which the gateway exchanges for a
// sandbox token. VerifyCredential checks it with the backend and returns
// the run it is bound to; the gateway accepts it only for the sandbox's
// recorded run. Refusals are *session.ExchangeRefusal; an unreachable
// backend wraps session.ErrExchangeUnavailable.
type CredentialVerifier interface {
	VerifyCredential(ctx context.Context, sandboxID, credential string) (runID string, err error)
}

// Run is one run a driver found on its backend.
type Run struct {
	SandboxID string
	RunID     string // the backend's name of the run (a pod's UID)
	Name      string // what an operator looks for (a pod's name)
}

// RunLister is implemented by drivers that find their runs on a shared
// backend by label, so that the gateway reports the runs it does not
// know (left behind by a deleted store, or made by hand).
type RunLister interface {
	ListRuns(ctx context.Context) ([]Run, error)
}
