#!/usr/bin/env bash
# Builds the Kubernetes of tests/kube/go.mod (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl) once per go.mod, go.sum and flags, into
# /var/cache/crikpy-kube/KEY/bin (or $CRIKPY_KUBE_CACHE/KEY/bin), outside the clone, so a fresh
# clone on a warm machine does not build again. Prints that bin dir. Go comes from PATH or
# /usr/local/go; the modules from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/../kube"
export PATH="$PATH:/usr/local/go/bin"

release=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)
# The version Kubernetes' own build stamps in (kubectl version, the API server's /version);
# unstamped binaries call themselves v0.0.0-master.
minor=${release#v1.}
minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

key="$release-$( (cat go.mod go.sum; echo "$ldflags") | sha256sum | cut -c1-12)"
root="${CRIKPY_KUBE_CACHE:-/var/cache/crikpy-kube}"
bin="$root/$key/bin"
if [[ -d "$bin" ]]; then  # renamed into place only once whole
    echo "$bin"
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "kube-build: Go is missing (needed to build Kubernetes $release for the tests)" >&2
    exit 1
fi

started=$SECONDS
rm -rf "$root/$key.part"
mkdir -p "$root/$key.part/bin"
echo "kube-build: building Kubernetes $release and etcd (first time only, ~10 min on 2 cores)" >&2
go build -ldflags "$ldflags" -o "$root/$key.part/bin/" tool >&2
mv "$root/$key.part/bin/server" "$root/$key.part/bin/etcd"  # go.etcd.io/etcd/server/v3's main
rm -rf "$root/$key"
mv "$root/$key.part" "$root/$key"
echo "kube-build: built in $((SECONDS - started)) s" >&2
echo "$bin"
