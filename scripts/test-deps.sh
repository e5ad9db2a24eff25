#!/usr/bin/env bash
# Installs what the test suite needs when it is missing, from Debian's
# archive only. Runs before every `make test`; a no-op when all is there.
set -euo pipefail

# Debian packages the tests use, one per line with the command that proves
# it is installed.
packages=(
  "util-linux:unshare"
  "busybox-static:busybox"
)

missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*} cmd=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

# The Postgres server (the store's conformance suite runs against it; see
# pkg/store/pgtest). Debian keeps initdb and postgres off PATH, under
# /usr/lib/postgresql/<version>/bin; psql on PATH does not mean the server
# is installed.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=("postgresql")
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "test-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
