"""Migrations without --privileged: the least privilege with which CRIU 4.2 dumps and restores here.

What a container needs, each part shown necessary by `test_each_part_is_needed`:

- `--cap-drop ALL --cap-add CHECKPOINT_RESTORE`: CRIU refuses to start without it (or
  CAP_SYS_ADMIN); it lets CRIU read /proc/PID/map_files on dump, and on restore choose PIDs
  (clone3 set_tid) and write ns_last_pid.
- CRIU's unprivileged mode, which crikpy asks for over RPC when it lacks CAP_SYS_ADMIN: in its
  default (root) mode CRIU probes the kernel by creating a network namespace, and restores a time
  namespace, chroots and sets socket buffers with SO_*BUFFORCE, which need CAP_SYS_ADMIN,
  CAP_SYS_TIME, CAP_SYS_CHROOT and CAP_NET_ADMIN instead.
- `--security-opt no-new-privileges`: CRIU's restorer trims the restored tasks' bounding set,
  which needs CAP_SETPCAP unless the task has no_new_privs (then the trim is left to it).
- `--security-opt seccomp=unconfined`: the workload inherits the container's filter, and the
  kernel lets CRIU suspend a filter (PTRACE_O_SUSPEND_SECCOMP) only if CRIU holds CAP_SYS_ADMIN
  and is under no filter itself. Any profile fails, an allow-all one included.
- `-v /proc/sys/kernel/ns_last_pid:/proc/sys/kernel/ns_last_pid`: /proc/sys is read-only in a
  container; without crikpy's PID floor the workload runs with a low PID, which whatever starts
  first in the next container (crikpy's own helpers, a wrapper script's children) may hold.
  The sysctl acts on the writer's PID namespace, so this exposes nothing of the host
  (`--security-opt unmask=/proc/sys` works too, but opens every host-wide sysctl to the container).

A workload that holds an established TCP connection when it is dumped also needs CAP_NET_ADMIN
(TCP repair mode): `test_an_established_connection_needs_net_admin`.
"""

from __future__ import annotations

import socket

import pytest

from tests.e2e.evidence import check_journal, check_stateful_generation, counts, states
from tests.e2e.podman import CHECKPOINT_DIR, UNPRIVILEGED_FLAGS, events, numbers, podman

pytestmark = pytest.mark.e2e

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
CAP_CHECKPOINT_RESTORE = 40


def least_privilege(tmp_path, *, without: str = "", add: tuple[str, ...] = ()) -> list[str]:
    """The security flags that replace --privileged; `without` leaves one part out (for
    "capabilities": --cap-drop ALL, none added); `add` adds capabilities."""
    caps = [] if without == "capabilities" else ["CHECKPOINT_RESTORE", *add]
    parts = {
        "capabilities": ["--cap-drop", "ALL", *(["--cap-add", ",".join(caps)] if caps else [])],
        "no-new-privileges": ["--security-opt", "no-new-privileges"],
        "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
        "ns_last_pid": ["-v", f"{NS_LAST_PID}:{NS_LAST_PID}"],
    }
    return [flag for name, flags in parts.items()
            if name != without or name == "capabilities" for flag in flags]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(container) -> dict[str, str]:
    """crikpy's (PID 1's) /proc status: the privileges the container really has."""
    lines = container.exec("cat", "/proc/1/status").splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def test_counter_continues_across_three_migrations(images, containers, volume, tmp_path):
    flags = least_privilege(tmp_path)
    seen: list[int] = []
    pids: set[int] = set()
    for generation in range(4):
        c = containers(images["counter"], volume=volume, env={"CRIKPY_NAME": "counter"},
                       security=flags)
        c.wait_for(lambda _, c=c: len(counts(c)) >= 5, what="five counts")
        status = _status(c)
        assert int(status["CapEff"], 16) == 1 << CAP_CHECKPOINT_RESTORE, status["CapEff"]
        assert int(status["CapBnd"], 16) == 1 << CAP_CHECKPOINT_RESTORE, status["CapBnd"]
        assert status["Seccomp"] == "0" and status["NoNewPrivs"] == "1"
        assert c.stop() == 0
        got = counts(c)
        expected_first = seen[-1] + 1 if seen else 0
        assert got[0] == expected_first, f"generation {generation} did not carry on: {got[:3]}"
        assert got == list(range(got[0], got[0] + len(got))), "a count repeated or skipped"
        pids.update(numbers(c.lines("count "), r" pid (\d+)$"))
        logs = c.logs()
        assert len(events(logs, "checkpoint.committed")) == 1
        assert len(events(logs, "restore.done")) == (1 if generation else 0)
        assert not events(logs, "pid_floor.unavailable")
        seen += got
    [pid] = pids
    assert pid > 9000, "the PID floor was not applied"


def test_stateful_workload_migrates(images, containers, volume, tmp_path):
    port = _free_port()
    env = {"CRIKPY_NAME": "stateful", "PORT": str(port), "STATE_MIB": "64"}
    flags = least_privilege(tmp_path)
    previous = None
    for generation in range(2):
        c = containers(images["stateful"], volume=volume, env=env, security=flags)
        first = check_stateful_generation(c, previous, port, 64)
        if generation:
            check_journal(c, first["tick"])
        assert c.stop() == 0
        assert events(c.logs(), "checkpoint.committed")
        previous = states(c)[-1]


def test_an_established_connection_needs_net_admin(images, containers, volume, tmp_path):
    port = _free_port()
    env = {"CRIKPY_NAME": "connected", "PORT": str(port), "STATE_MIB": "16"}

    def stop_while_connected(c) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            return c.stop()

    bare = containers(images["stateful"], volume=volume, env=env,
                      security=least_privilege(tmp_path))
    check_stateful_generation(bare, None, port, 16)
    assert stop_while_connected(bare) != 0
    [failed] = events(bare.logs(), "checkpoint.failed")
    assert "Can't turn TCP repair mode ON: Operation not permitted" in failed["error"]

    flags = least_privilege(tmp_path, add=("NET_ADMIN",))
    first = containers(images["stateful"], volume=volume, env=env, security=flags)
    check_stateful_generation(first, None, port, 16)
    assert stop_while_connected(first) == 0
    restored = containers(images["stateful"], volume=volume, env=env, security=flags)
    check_stateful_generation(restored, states(first)[-1], port, 16)


# part left out -> (the step that fails, what CRIU's log says)
NEEDED = {
    "capabilities": ("dump", ""),  # CRIU's check_caps refuses; the log is not even opened
    "seccomp-unconfined": ("dump", "suspending seccomp failed: Operation not permitted"),
    "no-new-privileges": ("restore", "Unable to drop capability"),  # the bounding-set trim
    "ns_last_pid": ("restore", "a PID the checkpoint needs is taken on this node"),
}


def _wrapped(pids: int) -> tuple[list[str], list[str]]:
    """`--entrypoint` and command for a start in which a wrapper shell holds PIDs up to `pids`
    with `sleep`s before it execs crikpy, as a wrapper script or crikpy's own helpers would.

    A container's first PIDs are not stable: runc's setup takes 2..5, sometimes one more, so
    what a start happens to collide with varies from run to run. Holding every PID up to
    `pids` makes the test's outcome certain either way."""
    script = (f"while :; do sleep 600 & [ $! -ge {pids} ] && break; done; "
              f"[ -d /proc/{pids} ] && echo held {pids}; "
              "exec crikpy run -- python3 /opt/counter/counter.py")
    return ["--entrypoint", "sh"], ["-c", script]


def _workload_pid(c) -> int:
    return numbers(c.lines("count "), r" pid (\d+)$")[-1]


@pytest.mark.parametrize("part", sorted(NEEDED))
def test_each_part_is_needed(part, images, containers, volume, tmp_path):
    step, message = NEEDED[part]
    env = {"CRIKPY_NAME": "counter"}
    flags = least_privilege(tmp_path, without=part)
    # Without the PID floor the workload starts above the PIDs runc's setup may take, so that
    # they can all be held at the next start.
    crowd = part == "ns_last_pid"
    extra, command = _wrapped(20) if crowd else ([], None)
    first = containers(images["counter"], volume=volume, env=env, security=flags,
                       extra=extra, command=command)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    code = first.stop()
    if step == "dump":
        assert code != 0
        [failed] = events(first.logs(), "checkpoint.failed")
        assert message in failed["error"]
        return
    assert code == 0 and events(first.logs(), "checkpoint.committed")
    pid = _workload_pid(first)
    extra, command = _wrapped(pid) if crowd else ([], None)
    second = containers(images["counter"], volume=volume, env=env, security=flags,
                        extra=extra, command=command)
    assert second.wait() != 0, "the restore should have failed"
    assert not crowd or f"held {pid}" in second.logs()
    [failed] = events(second.logs(), "restore.failed")
    assert message in failed["error"]
    assert not counts(second)


def test_with_the_pid_floor_a_crowded_start_restores(images, containers, volume, tmp_path):
    """The contrast to `test_each_part_is_needed[ns_last_pid]`: with ns_last_pid writable the
    workload runs above the floor, clear of whatever holds the low PIDs at the next start."""
    env = {"CRIKPY_NAME": "counter"}
    flags = least_privilege(tmp_path)
    first = containers(images["counter"], volume=volume, env=env, security=flags)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    extra, command = _wrapped(64)
    second = containers(images["counter"], volume=volume, env=env, security=flags,
                        extra=extra, command=command)
    second.wait_for(lambda _: len(counts(second)) >= 3, what="three counts after the restore")
    assert counts(second)[0] == counts(first)[-1] + 1
    assert _workload_pid(second) == _workload_pid(first) > 9000


def test_check_reports_only_the_ipc_sysctls(images, volume, tmp_path):
    """`crikpy check` with the least privilege: all is ok but `criu check`, which wants the IPC
    namespace sysctls (kernel/sem_next_id...) writable. They matter only when a dump includes an
    IPC namespace; crikpy dumps from inside the container's namespaces, so it never does."""
    proc = podman("run", "--rm", *UNPRIVILEGED_FLAGS, *least_privilege(tmp_path),
                  "-v", f"{volume}:{CHECKPOINT_DIR}", "--entrypoint", "crikpy",
                  images["crikpy"], "check", "--name", "probe", check=False)
    lines = proc.stdout.splitlines()
    status = {ln.split()[1]: ln.split()[0] for ln in lines}
    detail = {ln.split()[1]: ln for ln in lines}
    assert proc.returncode == 180, proc.stdout + proc.stderr
    assert [item for item, s in status.items() if s == "problem"] == ["criu-check"], proc.stdout
    assert "/proc/sys/kernel/sem_next_id is inaccessible: Read-only file system" in detail["criu-check"]
    for item in ("criu", "criu-version", "pycriu", "privileges", "ns_last_pid", "store"):
        assert status[item] == "ok", proc.stdout
    assert not list(volume.rglob("*probe*")), "the probe object was left behind"
