"""Benchmark: checkpoints to S3 and restores from it, next to plain boto3 on the same bytes.

For each size and kind of memory, runs the stateful example in a container, `podman stop`s it
(checkpoint to a SeaweedFS bucket on 127.0.0.1), restores it in a new container, and reads the
figures from crikpy's own log events and from the host (tests/bench/sampler.py: memory, CPU
and work-dir disk of every process in the container but the workload's). In the same run,
boto3's upload_file/download_file (default TransferConfig) move a file of the size CRIU dumped,
before compression, to the same server: the baseline. Prints a table per case, writes JSON;
asserts nothing.

    bash tests/bench/run.sh [--sizes 256,1024,4096] [--kinds random,compressible] [--json PATH]
        [--compare-image localhost/crikpy-stateful:TAG]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench.sampler import Sampler
from tests.e2e.evidence import states
from tests.e2e.podman import Container, events, podman
from tests.harness.s3server import BUCKET, S3Server

MIB = 1024 * 1024
WORK_DIR = "/var/lib/crikpy/work"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024",
                        help="memory sizes in MiB, comma-separated (4096 needs about 13 GB of "
                             "RAM and disk)")
    parser.add_argument("--kinds", default="random,compressible",
                        help="random (incompressible) and/or compressible (text and zeros, "
                             "about 26 %% with zstd)")
    parser.add_argument("--image", default="localhost/crikpy-stateful:bench")
    parser.add_argument("--json", default="bench-results.json", help="where to write the figures")
    parser.add_argument("--compare-image", metavar="IMAGE",
                        help="another build's stateful image (e.g. one of main before a change, "
                             "built with tests/harness/build-images.sh TAG): each case runs with "
                             "it too, in the same run, and the figures print side by side")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for crikpy in both containers, e.g. "
                             "CRIKPY_S3_CONCURRENCY=8; repeatable")
    args = parser.parse_args()
    settings = dict(pair.split("=", 1) for pair in args.env)

    results = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        server = S3Server(Path(tmp) / "seaweedfs").start()
        try:
            for mib in (int(s) for s in args.sizes.split(",")):
                for kind in args.kinds.split(","):
                    result = run(mib, kind, args.image, server, Path(tmp), settings)
                    print_case(result)
                    if args.compare_image:
                        result["compared"] = run(mib, kind, args.compare_image, server,
                                                 Path(tmp), settings)
                        print_comparison(result, args.image, args.compare_image)
                    results.append(result)
        finally:
            server.stop()
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.json}", file=sys.stderr)


def run(mib: int, kind: str, image: str, server: S3Server, tmp: Path,
        settings: dict[str, str]) -> dict:
    env = {**server.env, **settings,
           "CRIKPY_STORE": f"s3://{BUCKET}/bench-{uuid.uuid4().hex[:6]}",
           "CRIKPY_S3_PATH_STYLE": "true", "CRIKPY_NAME": "bench", "CRIKPY_GRACE_PERIOD": "600",
           "STATE_MIB": str(mib), "TICK_SECONDS": "1",
           "COMPRESSIBLE": "1" if kind == "compressible" else "0"}
    print(f"\n{mib} MiB of {kind} memory in the stateful example; S3: SeaweedFS on 127.0.0.1",
          file=sys.stderr)
    first = Container(image, env=env)
    second = None
    try:
        first.wait_for(lambda _: len(states(first)) >= 2, timeout=600, what="two ticks")
        workload = events(first.logs(), "workload.started")[0]["pid"]
        idle = Sampler(host_pid(first), workload, WORK_DIR)
        idle.sample()
        with Sampler(host_pid(first), workload, WORK_DIR) as dumping:
            first.stop(timeout=600)
        dump_logs = first.logs()
        second = Container(image, env=env)
        with Sampler(host_pid(second), workload, WORK_DIR) as restoring:
            second.wait_for(lambda _: len(states(second)) >= 1, timeout=600,
                            what="a restored tick")
        restore_logs = second.logs()
        started_at = int(podman("inspect", "--format", "{{.State.StartedAt.UnixNano}}",
                                second.name).stdout) / 1e9
        assert states(second)[0]["tick"] == states(first)[-1]["tick"] + 1, "not restored"
    finally:
        for c in (first, second):
            if c:
                c.remove()

    dumped = events(dump_logs, "checkpoint.dumped")[0]  # the pages went out during the dump
    size = dumped["pages_bytes"] + dumped["local_bytes"]  # what CRIU dumped, before compression
    at = {name: timestamp(events(logs, name)[0]) for logs, name in (
        (dump_logs, "checkpoint.started"), (dump_logs, "checkpoint.committed"),
        (restore_logs, "crikpy.started"), (restore_logs, "restore.done"))}
    uploaded = events(dump_logs, "checkpoint.uploaded")[0]
    committed = events(dump_logs, "checkpoint.committed")[0]
    fetched = events(restore_logs, "checkpoint.fetched")[0]
    restored = events(restore_logs, "restore.done")[0]
    checkpoint_s = at["checkpoint.committed"] - at["checkpoint.started"]
    restore_s = at["restore.done"] - started_at
    up_s, down_s = baseline(server, tmp, size)
    gb = size / 1e9
    return {
        "mib": mib, "kind": kind, "settings": settings, "dumped_bytes": size,
        "stored_bytes": committed["bytes"],
        "checkpoint": {
            "seconds": checkpoint_s, "dump": dumped["seconds"],
            "transfer": uploaded["seconds"], "commit": committed["seconds"] - uploaded["seconds"],
            "baseline_upload_file": up_s, "ratio": checkpoint_s / up_s,
            "peak_rss_mib": dumping.peak_rss / MIB, "peak_disk_mib": dumping.peak_disk / MIB,
            "peak_rss_by_process_mib": mib_each(dumping.peak_parts),
            "cpu_seconds_per_gb": dumping.cpu_seconds / gb,
        },
        "restore": {
            "seconds": restore_s, "startup": at["crikpy.started"] - started_at,
            "fetch": fetched["seconds"], "criu": restored["seconds"],
            "baseline_download_file": down_s, "ratio": restore_s / down_s,
            "peak_rss_mib": restoring.peak_rss / MIB, "peak_disk_mib": restoring.peak_disk / MIB,
            "peak_rss_by_process_mib": mib_each(restoring.peak_parts),
            "cpu_seconds_per_gb": restoring.cpu_seconds / gb,
        },
        "idle_rss_mib": idle.peak_rss / MIB,
    }


def print_comparison(r: dict, image: str, other: str) -> None:
    """This build's figures beside another build's, for the same case in the same run."""
    o = r["compared"]
    rows = [("checkpoint, SIGTERM to committed (s)", r["checkpoint"]["seconds"],
             o["checkpoint"]["seconds"]),
            ("  dump (s)", r["checkpoint"]["dump"], o["checkpoint"]["dump"]),
            ("  peak RSS, crikpy and CRIU (MiB)", r["checkpoint"]["peak_rss_mib"],
             o["checkpoint"]["peak_rss_mib"]),
            ("  CPU (s per GB)", r["checkpoint"]["cpu_seconds_per_gb"],
             o["checkpoint"]["cpu_seconds_per_gb"]),
            ("restore, container start to running (s)", r["restore"]["seconds"],
             o["restore"]["seconds"]),
            ("  peak RSS (MiB)", r["restore"]["peak_rss_mib"], o["restore"]["peak_rss_mib"]),
            ("idle memory, crikpy (MiB)", r["idle_rss_mib"], o["idle_rss_mib"])]
    width = max(len(row[0]) for row in rows)
    print(f"\n{r['mib']} MiB, {r['kind']}: this build beside another")
    print(f"{'':{width}}  {image[-30:]:>30}  {other[-30:]:>30}")
    for name, ours, theirs in rows:
        print(f"{name:{width}}  {ours:30.2f}  {theirs:30.2f}")
    sys.stdout.flush()


def print_case(r: dict) -> None:
    c, s = r["checkpoint"], r["restore"]
    mb = r["dumped_bytes"] / 1e6
    rows = [
        ("size", f"{mb:.0f} MB dumped, {r['stored_bytes'] / 1e6:.0f} MB stored "
                 f"({100 * r['stored_bytes'] / r['dumped_bytes']:.0f} %)", ""),
        ("checkpoint, SIGTERM to committed", f"{c['seconds']:.2f} s, {mb / c['seconds']:.0f} MB/s",
         f"upload_file {c['baseline_upload_file']:.2f} s; ratio {c['ratio']:.2f}"),
        ("  dump (pages streamed to the store)", f"{c['dump']:.2f} s", ""),
        ("  transfer of the rest", f"{c['transfer']:.2f} s", ""),
        ("  commit (manifest, pointer)", f"{c['commit']:.2f} s", ""),
        *resource_rows(c, disk_decimals=1),  # the dump's disk is a few MiB
        ("restore, container start to running", f"{s['seconds']:.2f} s",
         f"download_file {s['baseline_download_file']:.2f} s; ratio {s['ratio']:.2f}"),
        ("  crikpy start", f"{s['startup']:.2f} s", ""),
        ("  fetch (download, verify, write)", f"{s['fetch']:.2f} s", ""),
        ("  CRIU restore", f"{s['criu']:.2f} s", ""),
        *resource_rows(s, disk_decimals=0),
        ("idle memory, crikpy", f"{r['idle_rss_mib']:.0f} MiB", ""),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\n{r['mib']} MiB, {r['kind']}", *(f"{k}={v}" for k, v in r["settings"].items()))
    print(f"{'':{width}}  {'crikpy':30}  boto3, same bytes, same server, same run")
    for name, ours, theirs in rows:
        print(f"{name:{width}}  {ours:30}  {theirs}")
    sys.stdout.flush()


def resource_rows(step: dict, disk_decimals: int) -> list[tuple[str, str, str]]:
    """The memory, disk and CPU rows of a checkpoint or a restore."""
    return [
        ("  peak memory, crikpy + CRIU", f"{step['peak_rss_mib']:.0f} MiB",
         by_process(step["peak_rss_by_process_mib"])),
        ("  peak work-dir disk", f"{step['peak_disk_mib']:.{disk_decimals}f} MiB", ""),
        ("  CPU", f"{step['cpu_seconds_per_gb']:.2f} s per GB", ""),
    ]


def mib_each(parts: dict[str, int]) -> dict[str, float]:
    return {name: round(rss / MIB, 1) for name, rss in parts.items()}


def by_process(parts: dict[str, float]) -> str:
    return "at the peak: " + ", ".join(f"{name} {mib:.0f}" for name, mib in parts.items())


def host_pid(c: Container) -> int:
    return int(podman("inspect", "--format", "{{.State.Pid}}", c.name).stdout)


def timestamp(event: dict) -> float:
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


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
    path.unlink()
    (tmp / "baseline.back").unlink()
    return up, down


if __name__ == "__main__":
    main()
