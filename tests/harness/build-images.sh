#!/usr/bin/env bash
# Builds the crikpy image from this checkout and the example images on it, tagged TAG
# (default: latest): localhost/crikpy:TAG, localhost/crikpy-counter:TAG, localhost/crikpy-stateful:TAG,
# localhost/crikpy-matrix:TAG (the compatibility matrix's workloads).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-latest}

# The Debian mirror reachable here serves forky's Release file past its Valid-Until date. The
# workaround is mounted at build time only, so the Containerfile stays right for a real mirror.
conf=$(mktemp --suffix=.conf)
trap 'rm -f "$conf"' EXIT
echo 'Acquire::Check-Valid-Until "false";' > "$conf"

build() {
    podman build --runtime runc --pull=never -q -v "$conf:/etc/apt/apt.conf.d/99valid-until:ro" \
        --build-arg "CRIKPY_IMAGE=localhost/crikpy:$tag" -t "$1" -f "$2/Containerfile" "$2" >/dev/null
    echo "built $1"
}
build "localhost/crikpy:$tag" .
build "localhost/crikpy-counter:$tag" images/counter
build "localhost/crikpy-stateful:$tag" images/stateful
build "localhost/crikpy-matrix:$tag" images/matrix
