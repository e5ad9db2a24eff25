#!/usr/bin/env bash
# Installs the container engines the docker and podman driver tests run
# against, from Debian's archive, when they are missing: Docker Engine
# (dockerd, package docker.io) and Podman with runc (crun fails on these
# machines' hybrid cgroups; see shared/TESTING.md). Idempotent and quiet: a
# no-op when all is there, and `apt-get update` only when something is
# missing. The tests start private engines themselves (pkg/driver/enginetest);
# nothing here starts a service.
set -euo pipefail

# Debian packages, one per entry with the command that proves it is installed.
packages=(
  "docker.io:dockerd"
  "podman:podman"
  "runc:runc"
)

missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*} cmd=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "engine-deps: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "engine-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's output is shown only when it fails. Recommends stay on, as in the
# setup shared/TESTING.md measured.
if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "engine-deps: installing ${missing[*]} failed" >&2
  exit 1
fi
