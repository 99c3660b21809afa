"""Benchmark: what carrying the container's files costs, on an image with many files.

Builds, on the matrix image, an image with FILES extra small files (the matrix image itself
holds about 25,000 entries), runs a workload in it that changes CHANGED of them and writes
a MiB into /dev/shm, `podman stop`s it (a checkpoint to a file:// volume) and restores it in a
new container. Prints, from crikpy's own log events, side by side for the plain matrix image
and the large one: the listing at start (`files.mounts`), the capture at the dump
(`files.captured`: seconds, entries, bytes) and the put-back at the restore (`files.restored`).
Asserts nothing.

    .venv/bin/python -m tests.bench.container_files [--files 100000] [--changed 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.conftest import TAG
from tests.e2e.podman import Container, events

BASE = f"localhost/crikpy-matrix:{TAG}"  # built by the e2e tests (tests/harness/build-images.sh)
WORKLOAD = ("import os, time\n"
            "for i in range({changed}):\n"
            "    os.makedirs(f'/opt/many/{{i % 100}}', exist_ok=True)\n"
            "    open(f'/opt/many/{{i % 100}}/{{i}}', 'a').write('changed')\n"
            "open('/dev/shm/blob', 'wb').write(os.urandom(1 << 20))\n"
            "n = 0\n"
            "while True:\n"
            "    print(f'count {{n}}', flush=True); n += 1; time.sleep(0.2)\n")


def build(files: int) -> str:
    tag = f"localhost/crikpy-bench-files-{files}:{TAG}"
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Containerfile").write_text(
            f"FROM {BASE}\nRUN python3 -c \"import os; [os.makedirs(f'/opt/many/{{i % 100}}', "
            f"exist_ok=True) or open(f'/opt/many/{{i % 100}}/{{i}}', 'w').write('x') "
            f"for i in range({files})]\"\n")
        subprocess.run(["podman", "build", "--runtime", "runc", "--pull=never", "-q", "-t", tag,
                        context], check=True, capture_output=True, timeout=1200)
    return tag


def measure(image: str, changed: int) -> dict:
    volume = Path(tempfile.mkdtemp())
    code = WORKLOAD.format(changed=changed)
    first = Container(image, volume=volume, env={"CRIKPY_NAME": "bench"},
                      command=["python3", "-c", code])
    try:
        first.wait_for(lambda text: "count 3" in text, timeout=120)
        first.stop()
        second = Container(image, volume=volume, env={"CRIKPY_NAME": "bench"},
                           command=["python3", "-c", code])
        try:
            second.wait_for(lambda text: events(text, "restore.done"), timeout=120)
            start = events(first.logs(), "files.mounts")[0]
            captured = events(first.logs(), "files.captured")[0]
            restored = events(second.logs(), "files.restored")[0]
            return {"entries": start["entries"], "start_s": start["seconds"],
                    "dump_s": captured["seconds"], "carried": captured["entries"],
                    "bytes": captured["bytes"], "archive_bytes": captured["archive_bytes"],
                    "restore_s": restored["seconds"]}
        finally:
            second.remove()
    finally:
        first.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=1000)
    args = parser.parse_args()
    rows = {"matrix image": measure(BASE, args.changed),
            f"+{args.files} files": measure(build(args.files), args.changed)}
    keys = list(next(iter(rows.values())))
    print(f"{'':16}" + "".join(f"{k:>14}" for k in keys))
    for name, row in rows.items():
        print(f"{name:16}" + "".join(f"{row[k]:>14}" for k in keys))


if __name__ == "__main__":
    main()
