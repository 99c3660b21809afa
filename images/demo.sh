#!/usr/bin/env bash
# The demo: a counter is checkpointed by `podman stop` and restored in a brand-new container,
# twice, before your eyes. Installs what is missing first (podman, the base image, ...).
# With `stateful` as argument, it migrates the stateful example instead and shows its timings.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-counter}
case "$example" in counter|stateful) ;; *) echo "usage: $0 [counter|stateful]" >&2; exit 2;; esac

bash tests/harness/setup.sh
bash tests/harness/build-images.sh demo

volume=$(mktemp -d /var/tmp/crikpy-demo.XXXXXX)
names=()
cleanup() { podman rm -f "${names[@]}" >/dev/null 2>&1 || true; rm -rf "$volume"; }
trap cleanup EXIT

show() {  # the workload's own lines, and crikpy's main events with their figures
    podman logs "$1" 2>&1 | python3 -c '
import json, sys
keep = {"restore.done", "checkpoint.fetched", "restore.skipped", "checkpoint.dumped",
        "checkpoint.committed", "checkpoint.done", "restore.failed"}
for line in sys.stdin:
    if line.startswith("{"):
        e = json.loads(line)
        if e["event"] in keep:
            figures = " ".join(f"{k}={e[k]}" for k in ("id", "seconds", "bytes", "pages_bytes")
                               if k in e)
            print("  crikpy:", e["event"], figures)
    else:
        print(line, end="")'
}

for generation in 1 2 3; do
    name="crikpy-demo-$example-$generation-$$"
    names+=("$name")
    echo
    echo "=== container $generation: podman run $example (same checkpoint volume, fresh container)"
    podman run -d --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 --privileged \
        --network host -v "$volume:/var/lib/crikpy/checkpoints" -e CRIKPY_NAME="demo-$example" \
        --name "$name" "localhost/crikpy-$example:demo" >/dev/null
    sleep 4
    echo "=== podman stop: SIGTERM -> crikpy checkpoints the workload"
    podman stop -t 60 "$name" >/dev/null
    show "$name"
done
echo
echo "Each container carried on where the one before stopped: same PID, count never reset."
