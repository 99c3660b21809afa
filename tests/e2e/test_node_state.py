"""End to end: what a SIGTERM means depends on the node; a cloud notice checkpoints before SIGTERM.

The Kubernetes API server and the AWS metadata service cannot run here; tests/nodestate/fakes.py
answers like them on 127.0.0.1, which the containers reach through host networking.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.evidence import check_stateful_generation, counts, states
from tests.e2e.podman import events
from tests.harness.s3server import free_port
from tests.nodestate.fakes import TOKEN, node

pytestmark = pytest.mark.e2e
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def test_sigterm_checkpoints_only_when_the_node_is_leaving(images, containers, volume, fake,
                                                          tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    env = {"CRIKPY_NAME": "counter", "CRIKPY_CHECKPOINT_ON": "node-shutdown",
           "CRIKPY_KUBERNETES_API_URL": fake.url, "KUBERNETES_NODE_NAME": "node-a"}
    mount = ["-v", f"{token}:{TOKEN_PATH}:ro"]

    # A drain: the node is cordoned, then the pod gets SIGTERM.
    fake.nodes["node-a"] = node(cordoned=True)
    first = containers(images["counter"], volume=volume, env=env, extra=mount)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    decision = events(first.logs(), "checkpoint.decision")[0]
    assert (decision["checkpoint"], decision["source"]) == (True, "kubernetes")
    assert events(first.logs(), "checkpoint.committed")

    # On the new node the workload carries on. Then a rollout: the node is healthy.
    fake.nodes["node-a"] = node()
    second = containers(images["counter"], volume=volume, env=env, extra=mount)
    second.wait_for(lambda _: len(counts(second)) >= 3, what="the restored counter")
    assert counts(second)[0] == counts(first)[-1] + 1
    assert second.stop() == 128 + 15, "the workload did not shut down on its SIGTERM"
    logs = second.logs()
    assert events(logs, "checkpoint.decision")[0]["checkpoint"] is False
    assert not events(logs, "checkpoint.started")
    assert events(logs, "latest.cleared")

    # So the next start is cold.
    third = containers(images["counter"], volume=volume, env=env, extra=mount)
    third.wait_for(lambda _: len(counts(third)) >= 2, what="a cold start")
    assert counts(third)[0] == 0


def test_spot_notice_checkpoints_before_sigterm_and_the_workload_continues(images, containers,
                                                                          volume, fake):
    port = free_port()
    env = {"CRIKPY_NAME": "stateful", "CRIKPY_NODE_STATE_SOURCES": "aws",
           "CRIKPY_AWS_IMDS_URL": fake.url, "CRIKPY_NOTICE_POLL_INTERVAL": "1",
           "PORT": str(port), "STATE_MIB": "256"}
    first = containers(images["stateful"], volume=volume, env=env)
    check_stateful_generation(first, None, port, 256)

    fake.spot_action = {"action": "terminate", "time": "2026-11-22T10:02:00Z"}
    logs = first.wait_for(lambda text: '"workload.stopped"' in text, timeout=120,
                          what="the notice checkpoint")
    committed = events(logs, "notice.checkpoint_committed")[0]
    assert events(logs, "notice.received")[0]["source"] == "aws"
    print(f"\nlead time: notice to committed checkpoint {committed['seconds_after_notice']} s "
          f"(stateful example, 256 MiB, file store)")
    last = states(first)[-1]
    time.sleep(2)
    assert states(first)[-1] == last, "the workload ran on after its notice checkpoint"

    assert first.stop() == 0  # SIGTERM comes later; the checkpoint is already committed
    logs = first.logs()
    assert len(events(logs, "checkpoint.committed")) == 1
    assert events(logs, "notice.lead_time")[0]["seconds"] > 1

    fake.spot_action = None  # the pod comes back on a node without a notice
    second = containers(images["stateful"], volume=volume, env=env)
    check_stateful_generation(second, last, port, 256)


def test_periodic_checkpoints_survive_a_node_that_vanishes_without_notice(images, containers,
                                                                        volume):
    env = {"CRIKPY_NAME": "counter", "CRIKPY_CHECKPOINT_INTERVAL": "2s"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda text: len(events(text, "checkpoint.committed")) >= 2, timeout=60,
                   what="two periodic checkpoints")
    first.kill("KILL")  # no SIGTERM, no notice: the machine is simply gone
    first.wait()
    seen = counts(first)
    assert seen == list(range(len(seen))), "the workload stalled or skipped while checkpointed"
    assert all(e["reason"] == "periodic" for e in events(first.logs(), "checkpoint.started"))

    second = containers(images["counter"], volume=volume, env=env)
    second.wait_for(lambda _: len(counts(second)) >= 2, what="the restored counter")
    resumed = counts(second)[0]
    assert 0 < resumed <= seen[-1] + 1, "not restored from a periodic checkpoint"
    assert events(second.logs(), "restore.done")
