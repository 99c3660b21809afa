"""End to end: what a SIGTERM means depends on the node; a cloud notice checkpoints before SIGTERM.

The node is a real Node object of the real API server (tests/harness/kube.sh), changed with
kubectl as an operator, a drain, Karpenter or a kubelet would; crikpy reads it with the real
token of the example's ServiceAccount (tests/e2e/kubelet.py runs the pods). The AWS metadata
service cannot run here: tests/nodestate/fakes.py answers like it on 127.0.0.1, which the
containers reach through host networking.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.evidence import check_stateful_generation, counts, states
from tests.e2e.kubelet import drain
from tests.e2e.podman import events
from tests.helpers import free_port

pytestmark = pytest.mark.e2e
NODE_SHUTDOWN = {"CRIKPY_CHECKPOINT_ON": "node-shutdown"}
SHUTTING_DOWN = {"status": {"conditions": [{
    "type": "Ready", "status": "False", "reason": "KubeletNotReady",
    "message": "node is shutting down"}]}}


def test_kubectl_drain_checkpoints_and_a_healthy_node_declines(kube, counter):
    node_a, node_b = counter.node("a"), counter.node("b")

    # A drain: kubectl cordons node-a and evicts the pod; the kubelet sends SIGTERM.
    first = counter.pod_on(node_a)
    c1, _ = counter.kubelet.run(first, env=NODE_SHUTDOWN)
    c1.wait_for(lambda _: len(counts(c1)) >= 3, what="three counts")
    draining = drain(kube, node_a)
    kube.wait_for(lambda: kube.get("pod", "-n", counter.namespace, counter.name)["metadata"]
                  .get("deletionTimestamp"), what="the eviction")
    assert counter.kubelet.stop(first, c1) == 0
    assert draining.wait(timeout=120) == 0, draining.stdout.read()
    decision = events(c1.logs(), "checkpoint.decision")[0]
    assert (decision["checkpoint"], decision["source"]) == (True, "kubernetes")
    assert decision["detail"] == f"node {node_a} is cordoned"
    assert events(c1.logs(), "checkpoint.committed")

    # The StatefulSet's next pod, on node-b, carries on. Then a rollout: node-b is healthy.
    second = counter.pod_on(node_b, after=first)
    c2, _ = counter.kubelet.run(second, env=NODE_SHUTDOWN)
    c2.wait_for(lambda _: len(counts(c2)) >= 3, what="the restored counter")
    assert counts(c2)[0] == counts(c1)[-1] + 1, c2.logs()[-3000:]
    assert counter.kubelet.stop(second, c2) == 128 + 15, "the workload missed its SIGTERM"
    logs = c2.logs()
    decision = events(logs, "checkpoint.decision")[0]
    assert (decision["checkpoint"], decision["source"]) == (False, "kubernetes")
    assert not events(logs, "checkpoint.started")
    assert events(logs, "latest.cleared")

    # So the next pod starts cold.
    third = counter.pod_on(node_b, after=second)
    c3, _ = counter.kubelet.run(third, env=NODE_SHUTDOWN)
    c3.wait_for(lambda _: len(counts(c3)) >= 2, what="a cold start")
    assert counts(c3)[0] == 0


@pytest.mark.parametrize("leave", ["karpenter", "shutdown", "cordon"])
def test_the_node_leaving_makes_a_sigterm_checkpoint(kube, counter, leave):
    node = counter.node("a")
    pod = counter.pod_on(node)
    container, _ = counter.kubelet.run(pod, env=NODE_SHUTDOWN)
    container.wait_for(lambda _: len(counts(container)) >= 3, what="three counts")
    if leave == "karpenter":  # Karpenter's disruption taint, before it drains the node
        kube.kubectl("taint", "nodes", node, "karpenter.sh/disrupted:NoSchedule")
        detail = f"node {node} has taint karpenter.sh/disrupted"
    elif leave == "shutdown":  # the kubelet's graceful node shutdown, on the Ready condition
        kube.kubectl("patch", "node", node, "--subresource", "status", "--type", "strategic",
                     "-p", json.dumps(SHUTTING_DOWN))
        detail = f"node {node}: node is shutting down"
    else:
        kube.kubectl("cordon", node)
        detail = f"node {node} is cordoned"
    assert counter.kubelet.stop(pod, container) == 0
    decision = events(container.logs(), "checkpoint.decision")[0]
    assert (decision["checkpoint"], decision["source"], decision["detail"]) == (
        True, "kubernetes", detail)
    assert events(container.logs(), "checkpoint.committed")


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
