"""The compatibility matrix: real programs, each migrated three times between real containers.

Every workload runs from images/matrix (Debian's packages on the crikpy image). A generation is
one container: the first starts cold, each next one restores the checkpoint the previous
`podman stop` committed. The checks read what the workload itself prints or serves, so they
show its state carried over, not merely that something runs again. docs/workloads.md
lists what each test shows.
"""

from __future__ import annotations

import http.client
import re
import urllib.request

import pytest

from tests.e2e.evidence import MIGRATIONS, generations, processes
from tests.e2e.podman import Container, events, numbers
from tests.helpers import can_connect, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.matrix]



def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return resp.read().decode()


def test_nginx_master_and_workers_serve_again(images, containers, volume):
    port = free_port()
    seen: dict = {}

    def check(c: Container, generation: int) -> None:
        c.wait_for(lambda _: can_connect(port), what="nginx listening")
        procs = processes(c)
        master = sorted(p for p, cmd in procs.items() if cmd.startswith("nginx: master"))
        workers = sorted(p for p, cmd in procs.items() if cmd.startswith("nginx: worker"))
        assert len(master) == 1 and len(workers) == 2, procs
        served = {int(re.fullmatch(r"served-by (\d+)\n", _get(port)).group(1)) for _ in range(20)}
        assert served <= set(workers), (served, workers)
        if generation == 0:
            seen.update(master=master, workers=workers)
        else:
            assert (master, workers) == (seen["master"], seen["workers"]), \
                f"generation {generation}: nginx was restarted, not restored: {procs}"
            # A client's keep-alive connection from before the migration does not survive it:
            # its next request is reset (the client must reconnect, as after any restart).
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                seen["conn"].request("GET", "/")
                seen["conn"].getresponse().read()
            seen["conn"].close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.read().startswith(b"served-by ") and not resp.will_close
        seen["conn"] = conn

    generations(images, containers, volume, "nginx", ["sh", "/opt/matrix/nginx.sh"], check,
                 env={"PORT": str(port)})


def test_nginx_workers_of_another_user_are_refused_without_cap_sys_resource(
        images, containers, volume):
    """Debian's nginx runs its workers as www-data. Without CAP_SYS_RESOURCE (missing on the test
    machines, even in a privileged container) CRIU cannot dump a process of another user: crikpy
    says so before the dump, and nginx gets its SIGTERM and shuts down."""
    port = free_port()
    c = containers(images["matrix"], volume=volume, command=["sh", "/opt/matrix/nginx.sh"],
                   env={"CRIKPY_NAME": "nginx", "PORT": str(port), "NGINX_USER": "www-data"})
    cap_eff = int(re.search(r"CapEff:\s+(\w+)", c.exec("cat", "/proc/1/status")).group(1), 16)
    assert not cap_eff >> 24 & 1, ("this machine grants CAP_SYS_RESOURCE: www-data workers "
                                   "should migrate here; test that instead")
    c.wait_for(lambda _: can_connect(port), what="nginx listening")
    assert _get(port).startswith("served-by ")
    assert c.stop() == 0, c.logs()[-3000:]
    logs = c.logs()
    failed = events(logs, "checkpoint.failed")
    assert len(failed) == 1, failed
    assert re.match(r"process \d+ \(nginx\) runs as uid \d+ gid \d+, not crikpy's uid 0 gid 0: "
                    r"CRIU cannot dump a process of another user without CAP_SYS_RESOURCE",
                    failed[0]["error"]), failed
    assert [e["signal"] for e in events(logs, "signal.forwarded")] == ["SIGTERM"]
    assert "signal 15 (SIGTERM) received" in logs and not events(logs, "checkpoint.committed")


def _waiting_for(prefix: str, count: int):
    """A check that waits for `count` lines starting with `prefix` in this generation."""
    def check(c: Container, generation: int) -> None:
        c.wait_for(lambda _: len(c.lines(prefix)) >= count, what=f"{count} lines {prefix!r}")
    return check


def test_fifo_pipeline_carries_on(images, containers, volume):
    gens = generations(images, containers, volume, "pipeline", ["sh", "/opt/matrix/pipeline.sh"],
                        _waiting_for("pipeline consumed ", 10))
    for c in gens:
        assert not c.lines("pipeline GAP"), c.lines("pipeline GAP")
    consumed = [[int(ln.split()[2]) for ln in c.lines("pipeline consumed ")] for c in gens]
    firsts = [nums[0] for nums in consumed]
    flat = [n for nums in consumed for n in nums]
    assert flat == list(range(len(flat))), f"the pipeline restarted or lost numbers: firsts {firsts}"


def test_fifo_made_at_run_time_carries_on(images, containers, volume):
    """A FIFO that the workload makes at run time in the container's own filesystem comes back
    with the checkpoint (the container's changes are carried), so the pipeline carries on.
    Before, the restore failed on the FIFO's path and the state was lost."""
    env = {"CRIKPY_NAME": "pipeline", "FIFO": "/tmp/made-at-run-time.fifo"}
    command = ["sh", "/opt/matrix/pipeline.sh"]
    c = containers(images["matrix"], volume=volume, command=command, env=env)
    c.wait_for(lambda _: len(c.lines("pipeline consumed ")) >= 5, what="the pipeline running")
    assert c.stop() == 0 and events(c.logs(), "checkpoint.committed")
    again = containers(images["matrix"], volume=volume, command=command, env=env)
    again.wait_for(lambda _: len(again.lines("pipeline consumed ")) >= 3, what="the pipeline again")
    assert events(again.logs(), "restore.done"), again.logs()[-3000:]
    before, after = (numbers(x.lines("pipeline consumed "), r"consumed (\d+)") for x in (c, again))
    assert after[0] == before[-1] + 1, (before[-3:], after[:3])


def test_threads_each_carry_on(images, containers, volume):
    threads = 4
    gens = generations(images, containers, volume, "threads", ["python3", "/opt/matrix/threads.py"],
                        _waiting_for("thread ", 8 * threads), env={"THREADS": str(threads)})
    for k in range(threads):
        per_gen = [[int(ln.split()[2]) for ln in c.lines(f"thread {k} ")] for c in gens]
        assert all(per_gen), f"thread {k} printed nothing in some generation"
        flat = [n for nums in per_gen for n in nums]
        assert flat == list(range(len(flat))), \
            f"thread {k} restarted or skipped: {[nums[0] for nums in per_gen]}"
        tids = {ln.split()[3] for c in gens for ln in c.lines(f"thread {k} ")}
        assert len(tids) == 1, f"thread {k} was replaced by another thread: {tids}"


def _own_ipc_namespace(c: Container, pids: list[int]) -> bool:
    """Whether `pids` share one IPC namespace, and it is not crikpy's (PID 1's)."""
    links = c.exec("readlink", "/proc/1/ns/ipc", *(f"/proc/{p}/ns/ipc" for p in pids)).split()
    return len(links) == len(pids) + 1 and len(set(links[1:])) == 1 and links[1] != links[0]


@pytest.mark.parametrize("shm, how_many", [("1", 2), ("0", 1)],
                         ids=["shm-semaphore-and-queue", "semaphore-only"])
def test_sysv_ipc_carries_on(images, containers, volume, shm, how_many):
    """crikpy starts the workload in an IPC namespace of its own, which CRIU dumps and restores
    with the workload: the segment's counter, the semaphore guarding it and the message queue
    carry on. (In the container's namespace, shared with crikpy, CRIU would leave them behind:
    test_sysv_ipc_in_the_shared_namespace_is_refused.)"""
    def check(c: Container, generation: int) -> None:
        c.wait_for(lambda _: len(c.lines("sysv ")) >= 6, what="the workload working")
        pids = sorted(p for p, cmd in processes(c).items() if cmd == "python3 /opt/matrix/sysv.py")
        assert len(pids) == how_many, processes(c)
        assert _own_ipc_namespace(c, pids), f"generation {generation}: not in an own IPC namespace"

    gens = generations(images, containers, volume, "sysv", ["python3", "/opt/matrix/sysv.py"],
                        check, env={"SYSV_SHM": shm})
    assert [len(c.lines("sysv shmid=")) for c in gens] == [1] + [0] * MIGRATIONS, \
        "the workload started again instead of being restored"
    turns = [[ln for ln in c.lines("sysv ") if " total=" in ln] for c in gens]
    assert all(turns) and all(ln.endswith(" ok") for t in turns for ln in t), \
        [ln for t in turns for ln in t if not ln.endswith(" ok")]
    # A turn frozen between its semop and its print is printed by the next container: the
    # totals, taken under the semaphore, are every number once, whichever container printed them.
    totals = sorted(int(ln.split()[2].removeprefix("total=")) for t in turns for ln in t)
    assert totals == list(range(1, len(totals) + 1)), \
        f"the counter restarted or skipped: firsts {[t[0] for t in turns]}"


@pytest.mark.parametrize("shm, objects", [("1", ["shared memory segment", "semaphore set",
                                                 "message queue"]),
                                          ("0", ["semaphore set"])],
                         ids=["shm-semaphore-and-queue", "semaphore-only"])
def test_sysv_ipc_in_the_shared_namespace_is_refused(images, containers, volume, shm, objects):
    """With ipcNamespace: shared (for a workload that talks SysV IPC to another container of
    the pod) the workload's SysV objects are in the container's IPC namespace, which CRIU does
    not carry: crikpy refuses the checkpoint, names the setting, and the workload gets its
    SIGTERM. Without the refusal a semaphore-only program was checkpointed and restored with
    its semaphore gone (semop: EINVAL); a program with an attached segment failed deep in CRIU."""
    env = {"CRIKPY_NAME": "sysv", "SYSV_SHM": shm, "CRIKPY_IPC_NAMESPACE": "shared"}
    c = containers(images["matrix"], volume=volume, command=["python3", "/opt/matrix/sysv.py"],
                   env=env)
    c.wait_for(lambda _: len(c.lines("sysv ")) >= 6, what="the workload working")
    root = min(p for p, cmd in processes(c).items() if cmd == "python3 /opt/matrix/sysv.py")
    assert not _own_ipc_namespace(c, [root]), "not in the container's IPC namespace"
    assert c.stop() == 143, "the workload did not get its SIGTERM"
    logs = c.logs()
    lines = [ln for ln in c.lines("sysv ") if "total=" in ln]
    assert lines and all(ln.endswith(" ok") for ln in lines), lines
    failed = events(logs, "checkpoint.failed")
    assert len(failed) == 1 and "uses SysV IPC" in failed[0]["error"], failed
    assert "ipcNamespace: own" in failed[0]["error"], failed
    for what in objects:
        assert what in failed[0]["error"], failed
    assert [e["signal"] for e in events(logs, "signal.forwarded")] == ["SIGTERM"]
    assert not events(logs, "checkpoint.committed")

    cold = containers(images["matrix"], volume=volume, command=["python3", "/opt/matrix/sysv.py"],
                      env=env)
    cold.wait_for(lambda _: cold.lines("sysv "), what="a cold start")
    assert events(cold.logs(), "restore.skipped") and not events(cold.logs(), "restore.started")


def test_postgresql_is_refused_cleanly_without_cap_sys_resource(images, containers, volume):
    """PostgreSQL runs as the postgres user. Without CAP_SYS_RESOURCE (missing on the test
    machines, even in a privileged container) CRIU cannot read its rlimits ("Can't get rlimit 0:
    Operation not permitted"), so crikpy refuses it: the postmaster gets its SIGTERM and shuts
    down cleanly (a smart shutdown, exit 0), and no checkpoint is committed. Its SysV segment
    (the interlock) is in the workload's own IPC namespace, and so no longer refused."""
    port = str(free_port())
    env = {"CRIKPY_NAME": "postgres", "PORT": port}

    def psql(c: Container, sql: str) -> str:
        return c.exec("psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-tAc", sql).strip()

    c = containers(images["matrix"], volume=volume, command=["sh", "/opt/matrix/postgres.sh"],
                   env=env)
    cap_eff = int(re.search(r"CapEff:\s+(\w+)", c.exec("cat", "/proc/1/status")).group(1), 16)
    assert not cap_eff >> 24 & 1, ("this machine grants CAP_SYS_RESOURCE: PostgreSQL may "
                                   "migrate here; test that instead")
    c.wait_for(lambda text: "ready to accept connections" in text, what="postgres ready")
    postmaster = [p for p, cmd in processes(c).items() if "/bin/postgres -D" in cmd]
    assert len(postmaster) == 1 and _own_ipc_namespace(c, postmaster), processes(c)
    psql(c, "CREATE TABLE kept (n int); CREATE UNLOGGED TABLE scratch (n int);"
            "INSERT INTO kept SELECT generate_series(1, 100);"
            "INSERT INTO scratch SELECT generate_series(1, 50);")
    assert psql(c, "SELECT (SELECT count(*) FROM kept) || ' ' || (SELECT count(*) FROM scratch)") \
        == "100 50"
    assert c.stop() == 0, c.logs()[-3000:]
    logs = c.logs()
    failed = events(logs, "checkpoint.failed")
    assert len(failed) == 1, failed
    assert re.match(rf"process {postmaster[0]} \(postgres\) runs as uid \d+ gid \d+, not crikpy's "
                    r"uid 0 gid 0: CRIU cannot dump a process of another user without "
                    r"CAP_SYS_RESOURCE", failed[0]["error"]), failed
    assert [e["signal"] for e in events(logs, "signal.forwarded")] == ["SIGTERM"]
    assert "received smart shutdown request" in logs and "database system is shut down" in logs
    assert not events(logs, "checkpoint.committed")

    cold = containers(images["matrix"], volume=volume, command=["sh", "/opt/matrix/postgres.sh"],
                      env=env)
    cold.wait_for(lambda text: "ready to accept connections" in text, what="a cold start")
    assert events(cold.logs(), "restore.skipped") and not events(cold.logs(), "restore.started")
