"""The reliability contract (docs/reliability.md) where it only shows with real CRIU in podman.

Named for the contract's items, like tests/unit/test_reliability.py. Continuity is proven from
the workloads' own output, never from crikpy's say-so alone.
"""

from __future__ import annotations

import datetime
import json
import random
import time

import pytest

from tests.e2e.evidence import counts, stateful_app, states
from tests.e2e.podman import CHECKPOINT_DIR, RUN_FLAGS, events, podman
from tests.helpers import s3_env
from tests.s3.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

COUNTER = ["python3", "/opt/counter/counter.py"]


def _listing(image: str, volume, name: str) -> list[dict]:
    out = podman("run", "--rm", *RUN_FLAGS, "-v", f"{volume}:{CHECKPOINT_DIR}",
                 "--entrypoint", "crikpy", image, "checkpoints", "list", "--json", "--name", name)
    return json.loads(out.stdout)


def _workload_pid(c) -> int:
    return int(c.lines("count ")[-1].split()[-1])


def test_item1_and_7_awkward_additional_paths_commit_and_round_trip(images, containers, volume):
    # Nested paths, a dangling symlink, an empty directory, modes and owners; a FIFO appears
    # after the start (refused at start, left out at the dump with a warning).
    setup = ("mkdir -p /data/sub/deeper /data/empty && echo kept > /data/sub/f && "
             "chmod 640 /data/sub/f && chown 1234:5678 /data/sub/f && chmod 711 /data/sub && "
             "ln -s /nowhere /data/dangling && mkfifo /data/fifo && exec " + " ".join(COUNTER))
    env = {"CRIKPY_NAME": "paths", "CRIKPY_ADDITIONAL_PATHS": "/data /data/sub /data/sub/f"}
    first = containers(images["counter"], volume=volume, env=env, command=["sh", "-c", setup])
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    logs = first.logs()
    assert events(logs, "checkpoint.committed"), logs[-3000:]
    assert [e["path"] for e in events(logs, "additional_path.skipped")] == ["/data/fifo"]

    # The same command: another one would be another version, which starts cold.
    second = containers(images["counter"], volume=volume, env=env, command=["sh", "-c", setup])
    second.wait_for(lambda _: len(counts(second)) >= 2, what="the restored counter")
    assert counts(second)[0] == counts(first)[-1] + 1
    listing = second.exec("sh", "-c", "stat -c '%n %a %u:%g %F' /data/sub /data/sub/f /data/empty; "
                                      "readlink /data/dangling; cat /data/sub/f")
    assert listing.splitlines() == ["/data/sub 711 0:0 directory",
                                    "/data/sub/f 640 1234:5678 regular file",
                                    "/data/empty 755 0:0 directory",
                                    "/nowhere", "kept"]


def test_item2_workload_has_default_signals_and_its_own_ipc_namespace_in_every_generation(
        images, containers, volume):
    # A shell counter: Python would ignore SIGPIPE itself, hiding what it inherited.
    loop = 'i=0; while :; do echo "count $i pid $$"; i=$((i+1)); sleep 0.2; done'
    env = {"CRIKPY_NAME": "signals"}
    for generation in range(2):
        c = containers(images["counter"], volume=volume, env=env, command=["sh", "-c", loop])
        c.wait_for(lambda _: len(counts(c)) >= 2, what="two counts")
        status = c.exec("grep", "-E", "^Sig(Ign|Blk)", f"/proc/{_workload_pid(c)}/status")
        fields = dict(line.split(":\t") for line in status.strip().splitlines())
        assert fields == {"SigBlk": "0000000000000000", "SigIgn": "0000000000000000"}, \
            f"generation {generation}: {fields}"
        workload_ipc, crikpy_ipc = c.exec("readlink", f"/proc/{_workload_pid(c)}/ns/ipc",
                                          "/proc/1/ns/ipc").split()
        assert workload_ipc != crikpy_ipc, f"generation {generation}: in crikpy's IPC namespace"
        assert bool(events(c.logs(), "restore.done")) == bool(generation)
        assert c.stop() == 0


def test_item3_retention_failing_after_the_pointer_moved_still_commits(images, containers,
                                                                        s3_server):
    proxy = FaultProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    try:
        env = {**s3_env(proxy.endpoint, s3_server), "CRIKPY_NAME": "counter",
               "CRIKPY_KEEP_CHECKPOINTS": "1"}
        first = containers(images["counter"], env=env)
        first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
        assert first.stop() == 0

        second = containers(images["counter"], env=env)
        second.wait_for(lambda _: len(counts(second)) >= 3, what="the restored counter")
        proxy.inject("503", times=10_000, match="DELETE")  # retention can delete nothing
        assert second.stop() == 0, "a committed checkpoint was treated as a failure"
        logs = second.logs()
        assert events(logs, "checkpoint.committed") and not events(logs, "checkpoint.failed")
        assert events(logs, "checkpoint.housekeeping_failed")
        assert "DELETE" in {method for method, _, fault in proxy.seen if fault == "503"}

        proxy.queue.clear()
        third = containers(images["counter"], env=env)
        third.wait_for(lambda _: len(counts(third)) >= 2, what="the restored counter")
        assert counts(third)[0] == counts(second)[-1] + 1, "the committed checkpoint was lost"
    finally:
        proxy.close()


def test_item4_a_node_without_privileges_keeps_a_good_checkpoint(images, containers, volume):
    env = {"CRIKPY_NAME": "counter"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    committed = events(first.logs(), "checkpoint.committed")[0]["id"]

    bad_node = containers(images["counter"], volume=volume, env=env, privileged=False)
    assert bad_node.wait() == 178, bad_node.logs()[-3000:]
    assert not counts(bad_node), "it started cold over a good checkpoint"
    assert "CAP_SYS_ADMIN" in bad_node.logs()
    assert [(i["id"], i["status"], i["latest"]) for i in _listing(images["crikpy"], volume,
                                                                  "counter")] == \
        [(committed, "committed", True)]

    good_node = containers(images["counter"], volume=volume, env=env)
    good_node.wait_for(lambda _: len(counts(good_node)) >= 2, what="the restored counter")
    assert counts(good_node)[0] == counts(first)[-1] + 1


def test_item4_a_taken_pid_is_the_nodes_fault_not_the_checkpoints(images, containers, volume):
    env = {"CRIKPY_NAME": "counter"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    pid = _workload_pid(first)
    # Something on the new node already runs with the PID the checkpoint needs.
    squat = (f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; sleep 600 & sleep 0.2; "
             "exec crikpy run -- " + " ".join(COUNTER))
    taken = containers(images["counter"], volume=volume, env=env,
                       extra=["--entrypoint", "sh"], command=["-c", squat])
    assert taken.wait() == 178, taken.logs()[-3000:]
    assert f"Can't fork for {pid}" in taken.logs()
    assert [i["status"] for i in _listing(images["crikpy"], volume, "counter")] == ["committed"]


# A workload whose restore needs more of a node resource than the new node gives: a deleted
# file in /dev/shm held open (CRIU writes it back there), or fds above the open-file limit.
NEEDS_MORE = {
    "a smaller /dev/shm": (
        "import os, time\n"
        "fd = os.open('/dev/shm/ghost', os.O_RDWR | os.O_CREAT, 0o600)\n"
        "os.write(fd, os.urandom(1 << 20) * 40)\n"
        "os.unlink('/dev/shm/ghost')\n", ["--shm-size", "16m"], "less room"),
    "a lower open-file limit": (
        "import os\n"
        "held = [os.open('/dev/null', os.O_RDONLY) for _ in range(800)]\n",
        ["--ulimit", "nofile=850:850"], "open-file limit"),
}


@pytest.mark.parametrize("case", NEEDS_MORE, ids=NEEDS_MORE)
def test_item4_a_node_with_less_of_a_resource_keeps_a_good_checkpoint(
        images, containers, volume, case):
    setup, smaller, named = NEEDS_MORE[case]
    code = setup + ("import itertools, time\n"
                    "for n in itertools.count():\n"
                    "    print(f'count {n} pid {os.getpid()}', flush=True); time.sleep(0.3)\n")
    env = {"CRIKPY_NAME": "needs-more"}
    first = containers(images["counter"], volume=volume, env=env, command=["python3", "-c", code])
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    for _ in range(2):  # fewer than --restore-attempts (3): the checkpoint is kept for a node
        small = containers(images["counter"], volume=volume, env=env, extra=smaller,
                           command=["python3", "-c", code])
        assert small.wait() == 178, small.logs()[-3000:]
        [failed] = events(small.logs(), "restore.failed")
        assert named in failed["error"]
    assert [i["status"] for i in _listing(images["crikpy"], volume, "needs-more")] == ["committed"]
    usual = containers(images["counter"], volume=volume, env=env,
                       command=["python3", "-c", code])
    usual.wait_for(lambda _: len(counts(usual)) >= 2, what="the restored counter")
    assert counts(usual)[0] == counts(first)[-1] + 1


def test_item8_workload_on_a_tty_is_refused_and_gets_its_sigterm(images, containers, volume):
    env = {"CRIKPY_NAME": "tty"}
    c = containers(images["counter"], volume=volume, env=env, extra=["-t"])
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
    assert c.stop() == 128 + 15, "the workload did not get its SIGTERM"
    # On a tty crikpy logs for people (structlog's console renderer), not JSON.
    [failed] = [ln for ln in c.logs().splitlines() if "checkpoint.failed" in ln]
    assert "terminal" in failed and "without a tty" in failed
    again = containers(images["counter"], volume=volume, env=env)
    again.wait_for(lambda _: len(counts(again)) >= 2, what="a cold start")
    assert counts(again)[0] == 0 and not events(again.logs(), "restore.failed")


def test_item8_the_containers_terminal_on_another_fd_is_refused_too(images, containers, volume):
    """Its fds 0-2 are files, but it keeps the container's terminal on fd 3."""
    env = {"CRIKPY_NAME": "tty-fd3"}
    command = ["sh", "-c", "exec 3<&1 </dev/null >/tmp/out 2>&1; exec " + " ".join(COUNTER)]
    c = containers(images["counter"], volume=volume, env=env, extra=["-t"], command=command)
    c.wait_for(lambda _: c.exec("sh", "-c", "cat /tmp/out 2>/dev/null || true").count("count ") >= 3,
               what="three counts")
    assert c.stop() == 128 + 15, "the workload did not get its SIGTERM"
    [failed] = [ln for ln in c.logs().splitlines() if "checkpoint.failed" in ln]
    assert "on fd 3" in failed and "without a tty" in failed


@pytest.mark.parametrize("after", ["clear", "keep"])
def test_item12_failed_checkpoint_then_shutdown(images, containers, volume, after):
    env = {"CRIKPY_NAME": f"perf-{after}", "STATE_MIB": "8", "CRIKPY_AFTER_FAILED_CHECKPOINT": after}
    first = containers(images["stateful"], volume=volume, env=env)
    first.wait_for(lambda _: len(states(first)) >= 2, what="two ticks")
    assert first.stop() == 0
    committed = events(first.logs(), "checkpoint.committed")[0]["id"]

    second = containers(images["stateful"], volume=volume, env=env)
    second.wait_for(lambda _: len(states(second)) >= 1, what="a tick")
    second.kill("USR1")  # forwarded by crikpy; the workload opens an fd CRIU cannot dump
    second.wait_for(lambda _: any(s["perf_fds"] for s in states(second)), what="the perf fd")
    assert second.stop() == 128 + 15, "the workload did not get SIGTERM after the failed dump"
    assert "perf_event" in events(second.logs(), "checkpoint.failed")[0]["error"]

    third = containers(images["stateful"], volume=volume, env=env)
    third.wait_for(lambda _: len(states(third)) >= 1, what="a tick")
    if after == "keep":  # the previous checkpoint restores: the workload rewinds
        assert events(third.logs(), "restore.done")[0]["id"] == committed
        assert states(third)[0]["tick"] == states(first)[-1]["tick"] + 1
    else:  # no rewind: the journal of the second generation is not undone
        assert states(third)[0]["tick"] == 0
        assert events(third.logs(), "restore.skipped")


def test_crash_consistency_sigkill_at_random_moments_of_an_s3_commit(images, containers,
                                                                     s3_server):
    """Kill the container at random moments of its commit; every next start restores whole."""
    rng = random.Random(7)
    env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "crash", "STATE_MIB": "96"}
    app = stateful_app()
    frozen_ticks: list[int] = []  # the last tick each generation printed before its SIGTERM
    committed_any = False
    for round_ in range(5):
        c = containers(images["stateful"], env=env)
        c.wait_for(lambda _: len(states(c)) >= 2, what="two ticks")
        logs = c.logs()
        first = states(c)[0]
        assert first["digest"] == app.expected_digest("crikpy", 96, first["tick"]), \
            f"round {round_}: restored memory is not whole"
        assert not events(logs, "restore.failed") and not events(logs, "checkpoint.quarantined")
        if committed_any:
            assert events(logs, "restore.done"), f"round {round_}: a committed checkpoint was lost"
            assert first["tick"] - 1 in frozen_ticks, "restored a state no checkpoint holds"
        c.kill("TERM")
        time.sleep(rng.uniform(0.2, 2.5))
        frozen_ticks.append(states(c)[-1]["tick"])
        podman("kill", "-s", "KILL", c.name, check=False)  # it may have exited, committed
        c.wait()
        committed_any |= bool(events(c.logs(), "checkpoint.committed"))


def test_item6_a_dump_that_stalls_past_the_deadline_is_stopped_and_the_workload_resumes(
        images, containers, volume, tmp_path):
    # CRIU stops itself 0.1 s into the dump, with the tree seized: a CRIU that hangs.
    stalls = tmp_path / "criu-stalls"
    stalls.write_text('#!/bin/sh\n(sleep 0.1; kill -STOP $$) &\nexec criu "$@"\n')
    stalls.chmod(0o755)
    (tmp_path / "config.yaml").write_text("criuBinary: /opt/test/criu-stalls\n"
                                          "additionalPaths: [/var/lib/stateful]\n")
    env = {"CRIKPY_NAME": "stall", "STATE_MIB": "256", "CRIKPY_CONFIG": "/opt/test/config.yaml",
           "CRIKPY_GRACE_PERIOD": "6"}
    c = containers(images["stateful"], volume=volume, env=env,
                   extra=["-v", f"{tmp_path}:/opt/test:ro"])
    c.wait_for(lambda _: len(states(c)) >= 2, what="two ticks")
    assert c.stop(timeout=30) == 128 + 15, "the workload did not get its SIGTERM"
    # Timed by crikpy's own log, from the SIGTERM's checkpoint to its last word: podman's own
    # teardown, which is slow on a busy machine, is not crikpy's to answer for.
    logs = c.logs()
    [started] = events(logs, "checkpoint.started")
    [exited] = events(logs, "workload.exited")  # crikpy's last step: it exits with the code
    assert _seconds_between(started, exited) < 6, "crikpy outlived the grace period"
    [failed] = events(logs, "checkpoint.failed")
    assert "did not finish before the checkpoint deadline; CRIU was stopped" in failed["error"]
    assert not list(volume.rglob("manifest.json"))


def _seconds_between(earlier: dict, later: dict) -> float:
    """Seconds between two log events, by their ISO timestamps."""
    def at(event: dict) -> datetime.datetime:
        return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    return (at(later) - at(earlier)).total_seconds()
