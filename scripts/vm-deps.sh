#!/usr/bin/env bash
# Installs what the VM driver's tests and the guest image build need, from
# Debian's archive, when it is missing: QEMU (qemu-system-x86, which ships
# /usr/lib/qemu/virtiofsd), socat (QEMU's guest forward to the gateway's
# socket), cpio (the initramfs) and busybox-static (the guest's toolbox).
# The guest kernel is not installed: images/vm/build.sh downloads it into
# its cache with `apt-get download`. Idempotent and quiet: a no-op when all
# is there, and `apt-get update` only when something is missing.
set -euo pipefail

# Debian packages, one per entry with the file that proves it is installed.
packages=(
  "qemu-system-x86:/usr/bin/qemu-system-x86_64"
  "qemu-system-x86:/usr/lib/qemu/virtiofsd"
  "socat:/usr/bin/socat"
  "cpio:/usr/bin/cpio"
  "busybox-static:/bin/busybox"
)

missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*} file=${entry#*:}
  if [ ! -x "$file" ] && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "vm-deps: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "vm-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's output is shown only when it fails. No recommends: QEMU's pull in a
# desktop's worth of packages that a headless guest never uses.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "vm-deps: installing ${missing[*]} failed" >&2
  exit 1
fi
