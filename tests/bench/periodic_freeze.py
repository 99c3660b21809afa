"""Benchmark: how long a periodic checkpoint freezes the workload, as the workload sees it.

Runs the stateful example ticking every 0.1 s with --checkpoint-interval, and takes the largest
gap between two of its ticks (podman's own timestamps of its output lines) while each periodic
checkpoint runs: the freeze a user of the service would notice. The same memory is checkpointed
to S3 (SeaweedFS on 127.0.0.1) and, in the same run, to a file:// store on local disk, which is
the figure a freeze bounded by CRIU handing over the pages (spooling) would come near. The
baseline for the incremental-checkpoint work; asserts nothing.

    .venv/bin/python -m tests.bench.periodic_freeze [--sizes 256,1024] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.e2e.podman import Container, events, podman
from tests.harness.s3server import BUCKET, S3Server

TICK_SECONDS = 0.1
INTERVAL_SECONDS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="memory sizes in MiB")
    parser.add_argument("--image", default="localhost/crikpy-stateful:bench")
    parser.add_argument("--checkpoints", type=int, default=2,
                        help="periodic checkpoints measured per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        server = S3Server(Path(tmp) / "seaweedfs").start()
        try:
            for mib in (int(s) for s in args.sizes.split(",")):
                s3 = run(mib, "s3", args, server, Path(tmp))
                local = run(mib, "file", args, server, Path(tmp))
                print_case(mib, s3, local)
        finally:
            server.stop()


def run(mib: int, store: str, args, server: S3Server, tmp: Path) -> list[dict]:
    env = {"CRIKPY_NAME": "freeze", "CRIKPY_CHECKPOINT_INTERVAL": str(INTERVAL_SECONDS),
           "CRIKPY_GRACE_PERIOD": "600", "STATE_MIB": str(mib),
           "TICK_SECONDS": str(TICK_SECONDS)}
    volume = None
    if store == "s3":
        env.update(server.env, CRIKPY_STORE=f"s3://{BUCKET}/freeze-{uuid.uuid4().hex[:6]}",
                   CRIKPY_S3_PATH_STYLE="true")
    else:
        volume = tmp / f"store-{uuid.uuid4().hex[:6]}"
        volume.mkdir()
    print(f"\n{mib} MiB, periodic checkpoints to {store}", file=sys.stderr)
    c = Container(args.image, env=env, volume=volume)
    try:
        c.wait_for(lambda logs: len(events(logs, "checkpoint.done")) >= args.checkpoints,
                   timeout=INTERVAL_SECONDS * (args.checkpoints + 1) + 120 + mib / 10,
                   what="the periodic checkpoints")
        time.sleep(3 * TICK_SECONDS + 2)  # the tick after the last freeze, to close its gap
        logged = podman("logs", "--timestamps", c.name)  # the workload's and crikpy's lines
        lines = sorted((logged.stdout + logged.stderr).splitlines())
    finally:
        c.remove()
    return measured(lines)


def measured(lines: list[str]) -> list[dict]:
    """Per periodic checkpoint: its length and the largest gap between ticks inside it."""
    ticks, spans, started = [], [], None
    for line in lines:
        stamp, _, text = line.partition(" ")
        at = _seconds(stamp)
        if text.startswith("stateful "):
            ticks.append(at)
        elif '"event": "checkpoint.started"' in text:
            started = at
        elif '"event": "checkpoint.done"' in text and started is not None:
            spans.append((started, at))
            started = None
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    usual = statistics.median(gaps) if gaps else 0.0
    out = []
    for first, last in spans:
        inside = [b - a for a, b in zip(ticks, ticks[1:]) if b >= first and a <= last]
        out.append({"checkpoint_s": last - first, "freeze_s": max(inside, default=0.0),
                    "usual_gap_s": usual})
    return out


def _seconds(stamp: str) -> float:
    # podman: 2026-12-06T18:20:01.123456789Z (nanoseconds; Python takes microseconds)
    head, _, frac = stamp.rstrip("Z").partition(".")
    made = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc)
    return made.timestamp() + float(f"0.{frac or 0}")


def print_case(mib: int, s3: list[dict], local: list[dict]) -> None:
    print(f"\n{mib} MiB, random memory, a tick every {TICK_SECONDS} s")
    print(f"{'':34}  {'to S3 (SeaweedFS)':>22}  {'to file:// (local disk)':>24}")
    for n in range(max(len(s3), len(local))):
        for key, name in (("checkpoint_s", f"periodic checkpoint {n + 1} (s)"),
                          ("freeze_s", "  largest gap between ticks (s)")):
            row = [f"{r[n][key]:.2f}" if n < len(r) else "-" for r in (s3, local)]
            print(f"{name:34}  {row[0]:>22}  {row[1]:>24}")
    usual = s3[0]["usual_gap_s"] if s3 else 0.0
    print(f"{'usual gap between ticks (s)':34}  {usual:>22.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
