#!/usr/bin/env bash
# Builds the real Kubernetes parts the kubernetes tests run (kube-apiserver,
# kubelet, etcd) from tools/kube, once per machine, into a cache keyed by
# version and by the hash of tools/kube's go.mod and go.sum:
#   ${SANDKEY_KUBE_CACHE:-/var/cache/sandkey/kube}/<key>/{kube-apiserver,kubelet,etcd}
# Prints the directory on stdout. A cold build of the API server takes
# ~26 min on 2 cores (the kubelet ~5 min more with a warm Go cache); a warm
# cache costs nothing. Also installs, when missing, the node's Debian parts:
# containerd, the CNI plugins, runc, iproute2.
set -euo pipefail
cd "$(dirname "$0")/../tools/kube"

version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod | head -1)
key="$version-$(cat go.mod go.sum */main.go | sha256sum | cut -c1-12)"
cache="${SANDKEY_KUBE_CACHE:-/var/cache/sandkey/kube}/$key"

packages=(
  "containerd:/usr/bin/containerd"
  "containernetworking-plugins:/usr/lib/cni/bridge"
  "runc:/usr/sbin/runc"
  "iproute2:/usr/sbin/ip"
)
missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*} file=${entry#*:}
  [ -x "$file" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "kube-tools: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "kube-tools: installing ${missing[*]}" >&2
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "kube-tools: installing ${missing[*]} failed" >&2
    exit 1
  fi
  rm -f "$log"
fi

minor=${version#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"

mkdir -p "$cache"
# One build at a time per machine: two `make test` runs share the cache.
exec 9>"$cache/.lock"
flock 9
for tool in etcd kube-apiserver kubelet; do
  [ -x "$cache/$tool" ] && continue
  echo "kube-tools: building $tool $version into $cache (once per machine; the API server takes ~26 min cold on 2 cores)" >&2
  start=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$cache/$tool.tmp" "./$tool"
  mv "$cache/$tool.tmp" "$cache/$tool"
  echo "kube-tools: built $tool in $(( $(date +%s) - start )) s" >&2
done
echo "$cache"
