"""Checks that CRIU can work here: binary, version for this kernel, `criu check`, privileges.

Each check yields a Finding; `crikpy check` prints them and the supervisor logs the CRIU version
once at start. A finding is `ok`, a `problem` (a dump or restore will fail) or a `note`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess

from crikpy import procs

OK, PROBLEM, NOTE = "ok", "problem", "note"
# Linux 6.16 changed SO_PASSCRED handling; CRIU before 4.2 cannot dump any TCP/UDP socket there.
_SOCKET_KERNEL, _SOCKET_CRIU = (6, 16), (4, 2)
_CAP_SYS_ADMIN, _CAP_CHECKPOINT_RESTORE = 21, 40


@dataclasses.dataclass(frozen=True)
class Finding:
    item: str
    status: str
    detail: str


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def criu_findings(criu_binary: str = "criu") -> list[Finding]:
    found: list[Finding] = []
    path = shutil.which(criu_binary)
    if not path:
        return [Finding("criu", PROBLEM, f"'{criu_binary}' not found on PATH; install CRIU 4.2+ "
                        "(Debian: criu from forky/trixie-backports) or use the crikpy image")]
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Finding("criu", PROBLEM, f"'{path} --version' failed: {e}")]
    match = re.search(r"Version:\s*(\S+)", out)
    version = match.group(1) if match else "unknown"
    found.append(Finding("criu", OK, f"{path}, version {version}"))

    kernel = platform.release()
    if _version_tuple(kernel)[:2] >= _SOCKET_KERNEL and _version_tuple(version)[:2] < _SOCKET_CRIU:
        found.append(Finding("criu-version", PROBLEM,
                             f"CRIU {version} cannot dump TCP/UDP sockets on kernel {kernel}; "
                             "install CRIU 4.2 or newer"))
    else:
        found.append(Finding("criu-version", OK, f"CRIU {version} suits kernel {kernel}"))

    try:
        mode = [] if has_sys_admin() else ["--unprivileged"]  # as crikpy runs CRIU (options.py)
        check = subprocess.run([path, "check", *mode], capture_output=True, text=True, timeout=60)
        text = (check.stdout + check.stderr).strip().splitlines()
        last = text[-1] if text else ""
        if check.returncode == 0:
            found.append(Finding("criu-check", OK, last or "looks good"))
        else:
            errors = [ln for ln in text if "Error" in ln] or text[-1:]
            found.append(Finding("criu-check", PROBLEM,
                                 f"`criu check` failed: {' | '.join(errors[-2:])}; this CRIU does "
                                 "not work on this kernel"))
    except (OSError, subprocess.TimeoutExpired) as e:
        found.append(Finding("criu-check", PROBLEM, f"`criu check` could not run: {e}"))

    try:
        import pycriu  # noqa: F401, PLC0415

        found.append(Finding("pycriu", OK, "CRIU's Python RPC bindings import"))
    except ImportError:
        found.append(Finding("pycriu", PROBLEM, "pycriu is missing; install python3-pycriu "
                             "matching the CRIU version"))
    return found


def privilege_findings() -> list[Finding]:
    found = []
    if _can_run_criu():
        found.append(Finding("privileges", OK, "CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE held"))
    else:
        found.append(Finding("privileges", PROBLEM, "neither CAP_SYS_ADMIN nor "
                             "CAP_CHECKPOINT_RESTORE is held; run the container privileged, or "
                             "with manifests/components/crikpy's settings"))
    if procs.status_field("Seccomp") not in ("0", None):
        found.append(Finding("seccomp", PROBLEM, "crikpy runs under a seccomp filter, which CRIU "
                             "cannot suspend in the workload without CAP_SYS_ADMIN; set the "
                             "seccomp profile to Unconfined"))
    if os.access(procs.NS_LAST_PID, os.W_OK):
        found.append(Finding("ns_last_pid", OK, f"{procs.NS_LAST_PID} is writable"))
    else:
        found.append(Finding("ns_last_pid", PROBLEM, f"{procs.NS_LAST_PID} is not writable; "
                             "a restore may collide with crikpy's own PIDs; run privileged"))
    return found


def has_sys_admin() -> bool:
    return bool(_effective_caps() & (1 << _CAP_SYS_ADMIN))


def _can_run_criu() -> bool:
    return bool(_effective_caps() & (1 << _CAP_SYS_ADMIN | 1 << _CAP_CHECKPOINT_RESTORE))


def restore_blocker() -> str | None:
    """Why this node cannot restore anything, found before CRIU runs; None when nothing is seen."""
    if not _can_run_criu():
        return ("neither CAP_SYS_ADMIN nor CAP_CHECKPOINT_RESTORE is held, so CRIU cannot "
                "restore here; run the container privileged, or as "
                "manifests/components/crikpy does (see `crikpy check`)")
    return None


# What CRIU's restore log says when the node, not the checkpoint, is at fault.
_NODE_FAULTS = (
    (re.compile(r"Can't fork for \d+: File exists|PID \d+ is busy"),
     "a PID the checkpoint needs is taken on this node"),
    (re.compile(r"Address already in use"), "a port the checkpoint listens on is taken here"),
    (re.compile(r"Operation not permitted"),
     "CRIU was not permitted an operation here (capabilities, seccomp or AppArmor)"),
    (re.compile(r"Function not implemented|not supported by (the )?kernel"),
     "this node's kernel lacks a feature the checkpoint needs"),
    (re.compile(r"No space left on device"),
     "this node has less room than the checkpoint needs (a smaller /dev/shm or tmpfs, or a "
     "full disk)"),
    (re.compile(r"service_fd_base|Too many open files"),
     "this node's open-file limit (RLIMIT_NOFILE, set by the container runtime) is below what "
     "the checkpoint needs"),
)


def node_fault_in(criu_log: str) -> str | None:
    """The node's fault that a failed restore's log names, or None when it names none."""
    errors = [ln for ln in criu_log.splitlines() if "Error" in ln and "RLIMIT" not in ln]
    for pattern, meaning in _NODE_FAULTS:
        for line in reversed(errors):  # the last is the fatal one; earlier ones CRIU got past
            if pattern.search(line):
                return f"{meaning}: {line[line.index('Error'):].strip()[:200]}"
    return None


def soft_dirty_finding(criu_binary: str = "criu") -> Finding:
    try:
        out = subprocess.run([criu_binary, "check", "--feature", "mem_dirty_track"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return Finding("dirty-memory-tracking", NOTE, "unknown (criu did not run)")
    if out.returncode == 0:
        return Finding("dirty-memory-tracking", OK, "supported: incremental pre-dumps possible")
    return Finding("dirty-memory-tracking", NOTE,
                   "off on this kernel: every checkpoint copies all memory (no pre-dumps)")


def _effective_caps() -> int:
    return procs.effective_capabilities() or 0
