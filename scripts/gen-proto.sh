#!/usr/bin/env bash
# Generates Go code for every .proto file under proto/.
#
# protoc comes from the system (Debian: apt-get install -y protobuf-compiler);
# the Go plugins are installed at the versions pinned in tools/versions.env
# into ./bin, so the output does not depend on what else is on PATH.
# Files are compiled one directory (one proto package) at a time and land
# where their go_package option says, relative to the module root.
# Running it twice leaves the tree unchanged.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=../tools/versions.env
. tools/versions.env
module="$(go list -m)"
bin="$root/bin"
mkdir -p "$bin"

if ! command -v protoc >/dev/null 2>&1; then
	echo "gen-proto: protoc not found; install it with: apt-get install -y protobuf-compiler" >&2
	exit 1
fi

# install_plugin NAME PACKAGE VERSION installs NAME unless ./bin already
# holds that version.
install_plugin() {
	local name="$1" pkg="$2" version="$3" have=""
	if [[ -x "$bin/$name" ]]; then
		have="$("$bin/$name" --version 2>/dev/null | awk '{print $NF}')"
	fi
	if [[ "${have#v}" != "${version#v}" ]]; then
		echo "gen-proto: installing $name $version" >&2
		GOBIN="$bin" go install "$pkg@$version"
	fi
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

mapfile -t dirs < <(find proto -name '*.proto' -printf '%h\n' | LC_ALL=C sort -u)
if [[ ${#dirs[@]} -eq 0 ]]; then
	echo "gen-proto: no .proto files under proto/" >&2
	exit 1
fi
for dir in "${dirs[@]}"; do
	mapfile -t files < <(find "$dir" -maxdepth 1 -name '*.proto' | LC_ALL=C sort)
	echo "gen-proto: $dir (${#files[@]} files)" >&2
	PATH="$bin:$PATH" protoc \
		--proto_path=proto \
		--go_out=. --go_opt=module="$module" \
		--go-grpc_out=. --go-grpc_opt=module="$module" \
		"${files[@]}"
done
