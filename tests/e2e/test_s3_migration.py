"""End to end over S3: containers that share no volume, only a bucket on the test's SeaweedFS.

The containers use host networking, so they reach the server (or the fault proxy in front of it)
on 127.0.0.1 like a pod reaches its object store.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.evidence import check_journal, check_stateful_generation, counts, states
from tests.e2e.podman import RUN_FLAGS, events, podman
from tests.helpers import free_port, s3_env
from tests.s3.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e


def test_stateful_workload_migrates_through_s3_only(images, containers, s3_server):
    port = free_port()
    env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "stateful",
           "PORT": str(port), "STATE_MIB": "256"}
    previous = None
    for generation in range(4):
        c = containers(images["stateful"], env=env)  # no volume: the bucket is all they share
        first = check_stateful_generation(c, previous, port, 256)
        if generation == 3:
            check_journal(c, first["tick"])
        assert c.stop() == 0
        logs = c.logs()
        assert events(logs, "checkpoint.committed")
        assert events(logs, "checkpoint.uploaded")[0]["files"] > 10
        previous = states(c)[-1]

    # What the bucket holds, as `crikpy checkpoints list` shows it: the newest two (retention).
    listing = podman("run", "--rm", *RUN_FLAGS, *[f"-e{k}={v}" for k, v in env.items()],
                     "--entrypoint", "crikpy", images["crikpy"], "checkpoints", "list", "--json")
    infos = json.loads(listing.stdout)
    assert [(i["status"], i["latest"]) for i in infos] == [("committed", False),
                                                           ("committed", True)]


def test_store_outage_at_checkpoint_lets_workload_shut_down_and_keeps_previous(
        images, containers, s3_server):
    proxy = FaultProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    try:
        env = {**s3_env(proxy.endpoint, s3_server), "CRIKPY_NAME": "counter",
               "CRIKPY_GRACE_PERIOD": "8"}
        first = containers(images["counter"], env=env)
        first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
        assert first.stop() == 0

        second = containers(images["counter"], env=env)
        second.wait_for(lambda _: len(counts(second)) >= 3, what="the restored counter")
        proxy.persistent = "hang"  # the store stops answering
        started = time.monotonic()
        code = second.stop(timeout=30)
        stopped_in = time.monotonic() - started
        assert code == 128 + 15, "the workload did not get SIGTERM after the abandoned checkpoint"
        assert stopped_in < 8, f"took {stopped_in:.1f} s, past the 8 s grace period"
        failed = events(second.logs(), "checkpoint.failed")
        assert failed and "deadline" in failed[0]["error"]

        proxy.persistent = None
        third = containers(images["counter"], env=env)
        third.wait_for(lambda _: len(counts(third)) >= 2, what="the restored counter")
        assert counts(third)[0] == counts(first)[-1] + 1, "the previous checkpoint was not kept"
    finally:
        proxy.close()
