// Package docker is the sandkey driver for Docker Engine: each sandbox is
// a container, made and run through the Engine API (pinned to version
// 1.41, the newest Docker 20.10 accepts) by the implementation the podman
// driver shares, package container; its doc describes the container, the
// labels and the lifecycle.
//
// What is Docker's own: the daemon's default socket. (Docker 20.10 rejects
// API versions above 1.41, hence the pin every engine gets.)
package docker

import "github.com/sandkey/sandkey/pkg/driver/container"

// Name is the name the driver registers under.
const Name = "docker"

// DefaultHost is the Docker daemon's socket when Config.Host is empty.
const DefaultHost = "unix:///var/run/docker.sock"

// Config configures the driver; see container.Config.
type Config = container.Config

// Engine describes Docker to the shared container driver.
func Engine() container.Engine {
	return container.Engine{Name: Name, DefaultHost: DefaultHost}
}

// New returns the Docker driver. It does not contact the daemon; the first
// operation does. Close releases its connections.
func New(cfg Config) (*container.Driver, error) {
	return container.New(Engine(), cfg)
}
