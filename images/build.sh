#!/usr/bin/env bash
# Builds the sandbox base image, sandkey-base:latest, with whichever
# container engine is present: `make images` runs it.
#
#   images/build.sh                 # docker if its engine answers, else podman
#   SANDKEY_ENGINE=podman images/build.sh
#   SANDKEY_BASE_TAG=registry.example/sandkey-base:1.2 images/build.sh
#   images/build.sh gateway         # sandkey-gateway:latest (SANDKEY_GATEWAY_TAG)
#
# It compiles the supervisor as a static binary (CGO_ENABLED=0, so it runs
# in a FROM scratch image) into a temporary build context beside
# images/base/Containerfile, and builds that context. The engine is reached
# the usual way (DOCKER_HOST for docker; podman's own configuration), and
# the build never pulls: FROM scratch needs no base image.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
image="${1:-base}"
case "$image" in
  base) tag="${SANDKEY_BASE_TAG:-sandkey-base:latest}" binary=supervisor ;;
  gateway) tag="${SANDKEY_GATEWAY_TAG:-sandkey-gateway:latest}" binary=gateway ;;
  *)
    echo "images: unknown image $image: want base or gateway" >&2
    exit 1
    ;;
esac
engine="${SANDKEY_ENGINE:-}"
go="${GO:-go}"

if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    echo "images: no container engine: start Docker (apt-get install -y docker.io) or install Podman (apt-get install -y podman), or set SANDKEY_ENGINE" >&2
    exit 1
  fi
fi

case "$engine" in
  docker | podman) ;;
  *)
    echo "images: SANDKEY_ENGINE=$engine: want docker or podman" >&2
    exit 1
    ;;
esac

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
(cd "$root" && CGO_ENABLED=0 GOOS=linux GOFLAGS= "$go" build -trimpath -o "$ctx/$binary" "./cmd/$binary")
cp "$here/$image/Containerfile" "$ctx/Containerfile"

echo "images: building $tag with $engine" >&2
case "$engine" in
  docker)
    # The classic builder: it needs no buildx plugin and never pulls for
    # FROM scratch.
    DOCKER_BUILDKIT=0 docker build --pull=false -f "$ctx/Containerfile" -t "$tag" "$ctx"
    ;;
  podman)
    podman build --pull=never -f "$ctx/Containerfile" -t "$tag" "$ctx"
    ;;
esac
echo "images: built $tag" >&2
