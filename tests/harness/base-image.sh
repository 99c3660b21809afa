#!/usr/bin/env bash
# Makes the local base image `docker.io/library/debian:trixie-slim` when podman lacks it.
# No registry is reachable here, so the Containerfile's FROM is satisfied by a debootstrap of
# Debian trixie imported into podman's local storage. Idempotent: does nothing when present.
set -euo pipefail
image=docker.io/library/debian:trixie-slim
if podman image exists "$image"; then
    echo "base-image: $image present"
    exit 0
fi
root=$(mktemp -d /var/tmp/crikpy-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap trixie into $root (about 3 minutes)"
debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log"; exit 1; }
tar -C "$root" -c . | podman import - "$image" >/dev/null
rm -f "$root.log"
echo "base-image: $image imported"
