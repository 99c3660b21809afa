"""What crikpy costs in a container, seen from the host: memory, CPU and local disk over time.

`Sampler(container)` polls, every `interval` seconds, every process in the container's PID
namespace and splits them in two: the workload (the tree under the process whose PID in the
container is `workload_pid`, including the tasks CRIU is restoring, which have that PID from
their first instant) and the rest: crikpy, its helpers and CRIU, the overhead being measured.
It keeps the peak of the overhead's summed RSS, the last CPU time seen of each overhead process
(so short-lived CRIU processes count up to their last sample) minus what they had used before
the first sample, and the peak size of crikpy's
work dir, read through PID 1's root.

Memory is PSS (smaps_rollup): pages shared between processes (libraries, and the whole of a
process forked but not yet exec'd) are split among them, so the sum is what they really hold.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _pss(pid: int) -> int:
    rollup = _read(f"/proc/{pid}/smaps_rollup") or ""
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def _du(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Sampler:
    def __init__(self, host_pid1: int, workload_pid: int | None, work_dir: str,
                 interval: float = 0.1) -> None:
        self.host_pid1, self.workload_pid = host_pid1, workload_pid
        self.interval = interval
        self.work_dir = Path(f"/proc/{host_pid1}/root") / work_dir.lstrip("/")
        self.ns = os.readlink(f"/proc/{host_pid1}/ns/pid")
        self.peak_rss = 0  # bytes, overhead processes summed
        self.peak_parts: dict[str, int] = {}  # at the peak: container PID and name -> bytes
        self.peak_disk = 0  # bytes in the work dir
        self._cpu: dict[tuple[int, str], int] = {}  # (host pid, start time) -> ticks
        self._cpu_before: dict[tuple[int, str], int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        before = sum((self._cpu_before or {}).values())
        return (sum(self._cpu.values()) - before) / TICK

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        procs = {}  # host pid -> (container pid, parent host pid, rss bytes, start, cpu ticks)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != self.ns:
                    continue
            except OSError:
                continue
            status, stat = _read(f"/proc/{entry}/status"), _read(f"/proc/{entry}/stat")
            if status is None or stat is None:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
            nspid = int(fields["NSpid"].split()[-1])
            rest = stat.rsplit(")", 1)[1].split()  # fields from the 3rd on
            procs[int(entry)] = (nspid, int(rest[1]), rss, rest[19], int(rest[11]) + int(rest[12]),
                                 fields["Name"].strip())
        workload = {pid for pid, p in procs.items() if p[0] == self.workload_pid}
        grew = True
        while grew:  # the workload's whole tree
            more = {pid for pid, p in procs.items() if p[1] in workload} - workload
            grew, workload = bool(more), workload | more
        rss, parts = 0, {}
        for pid, (nspid, _, _, start, cpu, name) in procs.items():
            if pid not in workload:
                proc_rss = _pss(pid)
                rss += proc_rss
                parts[f"{nspid} {name}"] = proc_rss
                self._cpu[(pid, start)] = cpu
        if self._cpu_before is None:
            self._cpu_before = dict(self._cpu)
        if rss > self.peak_rss:
            self.peak_rss, self.peak_parts = rss, parts
        if self.work_dir.exists():
            self.peak_disk = max(self.peak_disk, _du(self.work_dir))
