// Package containere2e runs sandkey end to end in containers, against both
// engines: a private dockerd and a private Podman service (started once for
// the package by pkg/driver/enginetest), the docker and podman drivers, the
// real gateway core on a real SQLite store, and the real supervisor in the
// sandbox base image of images/base.
//
// Each engine gets two images, built through its API at the first test
// that needs them: sandkey-base:latest from images/base/Containerfile (the
// supervisor compiled by TestMain with CGO_ENABLED=0), and the test image,
// FROM sandkey-base:latest plus a static busybox (Debian's busybox-static,
// /bin/busybox) with the applets the tests use as symlinks, so that
// workloads and execs can run sleep, cat, sh -c.
//
// Three more images hold no sandkey layer at all: busybox FROM scratch
// with a shell as its CMD, the same with an ENTRYPOINT and a CMD, and the
// same with a passwd and group file and a USER. Their sandboxes run under
// the supervisor the driver mounts from the host.
//
// What the tests pin, each per engine (DESIGN.md §2, §4, §6, §7):
//
//   - a sandbox stopped past its token's expiry resumes and registers on
//     the first try, and exec works;
//   - with the gateway down past expiry, a running sandbox's supervisor
//     holds the re-minted token within a bound once the gateway is back,
//     through the directory, before its session returns;
//   - a rotation while the session is cut (the container paused) reaches
//     the supervisor at its next registration, even with the directory
//     channel taken away;
//   - rotations show through the read-only directory mount, which the
//     sandbox cannot write;
//   - a single-file bind mount goes stale after the host renames over it,
//     and the driver never makes one for the token directory;
//   - an image without a sandkey layer registers, rotates, execs and sees
//     its token directory and the mounted supervisor read-only; its
//     ENTRYPOINT and CMD run when no command is given; its USER runs the
//     workload and the execs while the supervisor stays root as PID 1.
//
// The benchmarks measure create-to-registered time and rotation-to-swap
// latency (until the gateway records the supervisor's acknowledgement) per
// engine.
//
// Only tests live here; this file holds the package doc.
package containere2e
