"""Benchmark: one checkpoint to S3 and one restore from it, next to plain boto3 on the same bytes.

Runs the stateful example with N MiB of memory (default 1024) in a container, `podman stop`s it
(checkpoint to a SeaweedFS bucket on 127.0.0.1), restores it in a new container, and reads the
figures from crikpy's own log events. In the same run, boto3's upload_file/download_file move a
file of the size CRIU dumped (before compression) to the same server: the baseline. Prints a
table; asserts nothing.

    bash tests/bench/run.sh [MIB] [--compressible]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.e2e.evidence import states
from tests.e2e.podman import Container, events
from tests.harness.s3server import BUCKET, S3Server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mib", type=int, nargs="?", default=1024)
    parser.add_argument("--image", default="localhost/crikpy-stateful:bench")
    parser.add_argument("--compressible", action="store_true",
                        help="a heap of text and zeros (about 26 %% with zstd) instead of random "
                             "bytes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        server = S3Server(Path(tmp) / "seaweedfs").start()
        try:
            run(args.mib, args.image, server, Path(tmp), args.compressible)
        finally:
            server.stop()


def run(mib: int, image: str, server: S3Server, tmp: Path, compressible: bool) -> None:
    env = {**server.env, "CRIKPY_STORE": f"s3://{BUCKET}/bench-{uuid.uuid4().hex[:6]}",
           "CRIKPY_S3_PATH_STYLE": "true", "CRIKPY_NAME": "bench", "CRIKPY_GRACE_PERIOD": "600",
           "STATE_MIB": str(mib), "TICK_SECONDS": "1",
           "COMPRESSIBLE": "1" if compressible else "0"}
    print(f"stateful example with {mib} MiB of {'compressible' if compressible else 'random'} "
          "memory; S3 server: SeaweedFS on 127.0.0.1",
          file=sys.stderr)
    first = Container(image, env=env)
    second = None
    try:
        first.wait_for(lambda _: len(states(first)) >= 2, timeout=300, what="two ticks")
        idle_kib = int(first.exec("grep", "VmRSS", "/proc/1/status").split()[1])  # crikpy, waiting
        first.stop(timeout=600)
        dump_logs = first.logs()
        second = Container(image, env=env)
        second.wait_for(lambda _: len(states(second)) >= 1, timeout=300, what="a restored tick")
        restore_logs = second.logs()
        assert states(second)[0]["tick"] == states(first)[-1]["tick"] + 1, "not restored"
    finally:
        for c in (first, second):
            if c:
                c.remove()

    dumped = events(dump_logs, "checkpoint.dumped")[0]  # the pages went out during the dump
    uploaded = events(dump_logs, "checkpoint.uploaded")[0]
    committed = events(dump_logs, "checkpoint.committed")[0]
    done = events(dump_logs, "checkpoint.done")[0]
    fetched = events(restore_logs, "checkpoint.fetched")[0]
    restored = events(restore_logs, "restore.done")[0]
    stored = committed["bytes"]
    size = dumped["pages_bytes"] + dumped["local_bytes"]  # what CRIU dumped, before compression

    up_s, down_s = baseline(server, tmp, size)
    mb = size / 1e6
    rows = [
        ("checkpoint size", f"{mb:.0f} MB dumped, {stored / 1e6:.0f} MB stored "
                            f"({100 * stored / size:.0f} %)", ""),
        ("dump, pages streamed to the store", f"{dumped['seconds']:.2f} s", ""),
        ("local disk used by the dump", f"{dumped['local_bytes'] / 1e6:.1f} MB", ""),
        ("after the dump: small images, commit", f"{committed['seconds']:.2f} s "
                                                 f"({uploaded['files']} files)", ""),
        ("checkpoint, SIGTERM to committed", f"{done['seconds']:.2f} s, {mb / done['seconds']:.0f} MB/s",
         f"upload_file {up_s:.2f} s, {mb / up_s:.0f} MB/s; ratio {done['seconds'] / up_s:.2f}"),
        ("crikpy idle RSS (PID 1, waiting)", f"{idle_kib / 1024:.0f} MiB", ""),
        ("crikpy peak RSS at checkpoint", f"{done['peak_rss_mib']:.0f} MiB", ""),
        ("download + verify", f"{fetched['seconds']:.2f} s, {mb / fetched['seconds']:.0f} MB/s",
         f"download_file {down_s:.2f} s, {mb / down_s:.0f} MB/s; "
         f"ratio {fetched['seconds'] / down_s:.2f}"),
        ("restore (CRIU)", f"{restored['seconds']:.2f} s", ""),
        ("crikpy peak RSS at restore", f"{restored['peak_rss_mib']:.0f} MiB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'crikpy':34}  boto3 baseline, same bytes, same server")
    for name, ours, theirs in rows:
        print(f"{name:{width}}  {ours:34}  {theirs}")


def baseline(server: S3Server, tmp: Path, size: int) -> tuple[float, float]:
    """boto3's managed transfer (default TransferConfig) of `size` random bytes, up and down."""
    path = tmp / "baseline.bin"
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    client = server.client()
    started = time.monotonic()
    client.upload_file(str(path), BUCKET, "baseline.bin")
    up = time.monotonic() - started
    started = time.monotonic()
    client.download_file(BUCKET, "baseline.bin", str(tmp / "baseline.back"))
    down = time.monotonic() - started
    return up, down


if __name__ == "__main__":
    main()
