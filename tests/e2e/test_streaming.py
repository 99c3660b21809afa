"""The pages go to the store while CRIU dumps them: local disk stays bounded, whatever the memory.

A workload with far more memory than its work dir can hold (a small tmpfs) is checkpointed and
restored; before streaming, its dump filled the work dir and failed, so its next start was cold.
"""

from __future__ import annotations

import pytest

from tests.e2e.evidence import check_stateful_generation, states
from tests.e2e.podman import events
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

MIB = 512
WORK_DIR_MIB = 64


def test_a_checkpoint_larger_than_the_work_dir_commits_and_restores(images, containers, volume):
    port = free_port()
    env = {"CRIKPY_NAME": "big", "STATE_MIB": str(MIB), "PORT": str(port)}
    small = ["--tmpfs", f"/var/lib/crikpy/work:size={WORK_DIR_MIB}m"]
    first = containers(images["stateful"], volume=volume, env=env, extra=small)
    check_stateful_generation(first, None, port, MIB)
    assert first.stop() == 0, first.logs()[-3000:]
    logs = first.logs()
    [dumped] = events(logs, "checkpoint.dumped")
    assert dumped["local_bytes"] < WORK_DIR_MIB * 1024 * 1024
    [committed] = events(logs, "checkpoint.committed")
    assert committed["bytes"] > MIB * 1024 * 1024

    # The restore downloads the pages (a restore reads them from disk): a normal work dir.
    second = containers(images["stateful"], volume=volume, env=env)
    check_stateful_generation(second, states(first)[-1], port, MIB)
