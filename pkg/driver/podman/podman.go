// Package podman is the sandkey driver for Podman: each sandbox is a
// container, made and run through Podman's Docker-compatible REST API
// (`podman system service`, API version 1.41) by the implementation the
// docker driver shares, package container; its doc describes the
// container, the labels and the lifecycle.
//
// What is Podman's own: its default socket, /run/podman/podman.sock
// (root's service). Where Podman's compatible API differs from Docker's
// in ways the driver meets, the shared driver already does what both need:
// the API ignores `netns` from containers.conf, so the driver sends
// NetworkMode "none" itself, as it does for Docker; and a missing image is
// never pulled because the driver checks it with ImageInspect and creates
// the container from the image's ID.
//
// The service needs runc and the cgroupfs manager on hosts with hybrid
// cgroups, where crun fails (shared/TESTING.md has the configuration).
package podman

import "github.com/sandkey/sandkey/pkg/driver/container"

// Name is the name the driver registers under.
const Name = "podman"

// DefaultHost is root's Podman API socket when Config.Host is empty.
const DefaultHost = "unix:///run/podman/podman.sock"

// Config configures the driver; see container.Config.
type Config = container.Config

// Engine describes Podman to the shared container driver.
func Engine() container.Engine {
	return container.Engine{Name: Name, DefaultHost: DefaultHost}
}

// New returns the Podman driver. It does not contact the service; the
// first operation does. Close releases its connections.
func New(cfg Config) (*container.Driver, error) {
	return container.New(Engine(), cfg)
}
