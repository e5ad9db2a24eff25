// Package enginetest starts private container engines for tests, and builds
// the small images the driver tests run in them.
//
// Nothing runs when a test run begins, and the tests must never touch an
// engine of the host, so every engine here is a process of the test's own:
//
//   - Docker: `dockerd` with its socket, data root, exec root and pid file in
//     a private directory, the cgroupfs driver, and no bridge, iptables or
//     masquerading (it starts its own containerd, whose state lives under
//     the same directory);
//   - Podman: `podman system service --time=0` with its storage root, run
//     root, tmp dir, volume and network-config dirs in a private directory,
//     and CONTAINERS_CONF pointing at a configuration this package writes
//     (runc, cgroupfs, file events, ulimits the machine allows; see
//     shared/TESTING.md). Its registries configuration lists no registry
//     to search, so a short image name never resolves to a remote one.
//
// The private directory is a short one under the system temp dir: unix
// socket paths must stay under 108 bytes, and the engines make sockets
// deep below it.
//
// A launch waits until the engine answers a ping on its socket. Stop
// removes every container the engine holds (Podman's conmon processes
// outlive the service otherwise), sends SIGTERM to the engine's pid, waits,
// sends SIGKILL if it must, then kills by pid any process left whose
// command line names the private directory (a containerd or conmon
// orphaned by a killed engine), unmounts whatever is still mounted below
// the directory and removes it. No process is ever looked up by name.
//
// # Missing engines
//
// When an engine's binary is not installed, a test that asks for it is
// skipped with a message naming the Debian package to install
// (scripts/engine-deps.sh installs them all), except under CI=true, where
// it fails: CI must never pass by skipping the engines.
//
// # Sharing
//
// An engine takes a quarter of a second (dockerd) to start, and more to
// stop; a package's tests share one through a Shared value whose Stop the
// package's TestMain calls after m.Run. StartDocker and StartPodman start
// one for a single test instead.
//
// # Images
//
// BuildImage builds an image through the engine's API from a directory
// (the build context, with its Dockerfile), with the classic builder and
// no pull. StandInImage builds the stand-in supervisor (package standin)
// as a static binary and wraps it in a FROM scratch image whose
// entrypoint is ["/supervisor", "--"], the entrypoint of baked sandkey
// images.
package enginetest
