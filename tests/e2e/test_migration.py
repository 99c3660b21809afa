"""End to end with real CRIU in real containers: `podman stop` checkpoints, a new container restores.

Every test shares a checkpoint volume between containers (a pod's PVC) and proves continuity
from the workload's own output, never from crikpy's say-so alone.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.e2e.evidence import check_journal, check_stateful_generation, counts, states
from tests.e2e.podman import CHECKPOINT_DIR, RUN_FLAGS, events, podman

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _crikpy_cli(image: str, volume, *args: str) -> str:
    return podman("run", "--rm", *RUN_FLAGS, "-v", f"{volume}:{CHECKPOINT_DIR}",
                  "--entrypoint", "crikpy", image, *args).stdout


def test_counter_continues_across_three_migrations(images, containers, volume):
    seen: list[int] = []
    for generation in range(4):
        c = containers(images["counter"], volume=volume, env={"CRIKPY_NAME": "counter"})
        c.wait_for(lambda _: len(counts(c)) >= 5, what="five counts")
        assert c.stop() == 0
        got = counts(c)
        expected_first = seen[-1] + 1 if seen else 0
        assert got[0] == expected_first, f"generation {generation} did not carry on: {got[:3]}"
        assert got == list(range(got[0], got[0] + len(got))), "a count repeated or skipped"
        logs = c.logs()
        assert len(events(logs, "checkpoint.committed")) == 1
        assert len(events(logs, "restore.done")) == (1 if generation else 0)
        seen += got


def test_stateful_workload_keeps_memory_children_file_and_socket(images, containers, volume):
    port = _free_port()
    env = {"CRIKPY_NAME": "stateful", "PORT": str(port), "STATE_MIB": "256"}
    previous = None
    for generation in range(4):
        c = containers(images["stateful"], volume=volume, env=env)
        first = check_stateful_generation(c, previous, port, 256)
        if generation == 3:
            check_journal(c, first["tick"])
        assert c.stop() == 0
        assert events(c.logs(), "checkpoint.committed")
        previous = states(c)[-1]


def test_natural_exit_clears_latest_and_next_start_is_cold(images, containers, volume):
    env = {"CRIKPY_NAME": "finite", "COUNT_TO": "30", "EXIT_CODE": "3"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0

    restored = containers(images["counter"], volume=volume, env=env)
    assert restored.wait() == 3, "crikpy did not exit with the workload's own code"
    got = counts(restored)
    assert got[0] == counts(first)[-1] + 1 and got[-1] == 30
    assert events(restored.logs(), "latest.cleared")

    cold = containers(images["counter"], volume=volume, env=env)
    cold.wait_for(lambda _: len(counts(cold)) >= 2, what="two counts")
    assert counts(cold)[0] == 0
    assert events(cold.logs(), "restore.skipped")


def test_corrupt_checkpoint_is_quarantined_and_start_is_cold(images, containers, volume):
    env = {"CRIKPY_NAME": "counter"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0

    pages = max(volume.rglob("pages-*.img"), key=lambda p: p.stat().st_size)
    data = bytearray(pages.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pages.write_bytes(bytes(data))

    second = containers(images["counter"], volume=volume, env=env)
    second.wait_for(lambda _: len(counts(second)) >= 3, what="a cold start")
    assert counts(second)[0] == 0
    quarantined = events(second.logs(), "checkpoint.quarantined")
    assert quarantined and "does not match its manifest" in quarantined[0]["reason"]

    listing = json.loads(_crikpy_cli(images["crikpy"], volume, "checkpoints", "list", "--json",
                                     "--name", "counter"))
    assert [(i["status"], i["latest"]) for i in listing] == [("quarantined", False)]
    assert pages.name in listing[0]["reason"]

    # The pod is not stuck: the next checkpoint is good and restores.
    assert second.stop() == 0
    third = containers(images["counter"], volume=volume, env=env)
    third.wait_for(lambda _: len(counts(third)) >= 2, what="two counts")
    assert counts(third)[0] == counts(second)[-1] + 1


def test_check_passes_in_a_privileged_container(images, volume):
    proc = podman("run", "--rm", *RUN_FLAGS, "-v", f"{volume}:{CHECKPOINT_DIR}",
                  "--entrypoint", "crikpy", images["crikpy"], "check", "--name", "probe",
                  check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = {ln.split()[1]: ln.split()[0] for ln in lines}
    for item in ("criu", "criu-version", "criu-check", "pycriu", "privileges", "ns_last_pid",
                 "store"):
        assert status[item] == "ok", proc.stdout
    assert not list(volume.rglob("*probe*")), "the probe object was left behind"
