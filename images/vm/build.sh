#!/usr/bin/env bash
# Builds sandkey's VM guest image (what `make vm-image` runs):
#
#   images/vm/build.sh [OUT_DIR]        default OUT_DIR: bin/vm
#
# OUT_DIR gets vmlinuz, initrd.gz, cmdline and rootfs/ (see
# images/vm/mkimage). The kernel is Debian's cloud kernel: the
# linux-image-cloud-amd64 package and the linux-image-*-cloud-amd64 package
# it depends on, fetched with `apt-get download` into a cache outside the
# repository (SANDKEY_VM_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/sandkey/vm)
# and reused from there; SANDKEY_VM_REFRESH=1 fetches them again. The
# supervisor is built static (CGO_ENABLED=0) from this tree, unless
# SUPERVISOR names a binary to use; busybox comes from Debian's
# busybox-static (scripts/vm-deps.sh installs it).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$repo/bin/vm}"
cache="${SANDKEY_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandkey/vm}"
busybox="${BUSYBOX:-/bin/busybox}"
GO="${GO:-go}"

say() { echo "vm-image: $*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$busybox" ] || die "no $busybox: run scripts/vm-deps.sh (installs busybox-static)"
mkdir -p "$cache" "$out"
out="$(cd "$out" && pwd)"

# download PACKAGE: fetches PACKAGE's .deb into the cache unless it is
# there, updating the package lists once if apt does not know it.
download() {
  local pkg=$1
  if [ "${SANDKEY_VM_REFRESH:-0}" != 1 ] && compgen -G "$cache/${pkg}_*.deb" >/dev/null; then
    return 0
  fi
  rm -f "$cache/${pkg}"_*.deb
  local log
  log="$(mktemp)"
  if ! (cd "$cache" && apt-get download -q "$pkg") >"$log" 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
      say "apt-get download $pkg failed; updating the package lists and retrying"
      apt-get update -qq >>"$log" 2>&1 || true
    fi
    if ! (cd "$cache" && apt-get download -q "$pkg") >>"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      die "cannot download $pkg from Debian's archive"
    fi
  fi
  rm -f "$log"
}

download linux-image-cloud-amd64
meta="$(ls -1 "$cache"/linux-image-cloud-amd64_*.deb | sort -V | tail -n 1)"
# The metapackage depends on exactly one versioned kernel package.
kpkg="$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[^ ]*-cloud-amd64\).*/\1/p' | head -n 1)"
[ -n "$kpkg" ] || die "$meta depends on no linux-image-*-cloud-amd64 package"
download "$kpkg"
kdeb="$(ls -1 "$cache/${kpkg}"_*.deb | sort -V | tail -n 1)"

kroot="$cache/$(basename "$kdeb" .deb)"
if [ ! -d "$kroot/boot" ]; then
  rm -rf "$kroot.tmp"
  dpkg -x "$kdeb" "$kroot.tmp"
  mv "$kroot.tmp" "$kroot"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
supervisor="${SUPERVISOR:-}"
if [ -z "$supervisor" ]; then
  supervisor="$work/supervisor"
  (cd "$repo" && CGO_ENABLED=0 "$GO" build -trimpath -o "$supervisor" ./cmd/supervisor)
fi
(cd "$repo" && "$GO" build -o "$work/mkimage" ./images/vm/mkimage)
"$work/mkimage" -kernel-root "$kroot" -supervisor "$supervisor" -busybox "$busybox" -out "$out"
say "built $out from $(basename "$kdeb")"
