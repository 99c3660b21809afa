"""End to end: Kubernetes Events tell a migration's story: Checkpointed, Restored, RestoreFailed.

No API server can run here; tests/nodestate/fakes.py answers like one on 127.0.0.1, which the
containers reach through host networking, with the service-account token mounted where
Kubernetes mounts it. Each container plays a new pod of one StatefulSet: the same name, a new UID,
given as the downward API would. The `kubectl describe pod` excerpts printed at the end (and shown
in the README) are tests/nodestate/kubectl.py's rendering of what the fake received.
"""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.evidence import counts
from tests.e2e.podman import events
from tests.nodestate.fakes import TOKEN, FakeNodeState
from tests.nodestate.kubectl import describe_events

pytestmark = pytest.mark.e2e
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
POD = "counter-0"


def about(fake: FakeNodeState, uid: str) -> list[dict]:
    """The Events the fake received about the pod with `uid`, in the order they came."""
    return [e for e in fake.events.values() if e["involvedObject"].get("uid") == uid]


def test_events_tell_the_story_of_a_migration(images, containers, volume, fake, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    mount = ["-v", f"{token}:{TOKEN_PATH}:ro"]
    uids = {pod: str(uuid.uuid4()) for pod in "abc"}

    def pod(letter: str, node: str) -> dict:
        return {"CRIKPY_NAME": "counter", "CRIKPY_KUBERNETES_API_URL": fake.url,
                "POD_NAME": POD, "POD_NAMESPACE": "default", "POD_UID": uids[letter],
                "KUBERNETES_NODE_NAME": node}

    # Pod a on node-a starts cold; a drain sends SIGTERM.
    first = containers(images["counter"], volume=volume, env=pod("a", "node-a"), extra=mount)
    first.wait_for(lambda _: len(counts(first)) >= 3, what="three counts")
    assert first.stop() == 0
    committed = events(first.logs(), "checkpoint.committed")[0]
    [checkpointed] = about(fake, uids["a"])
    assert checkpointed["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": POD,
                                              "namespace": "default", "uid": uids["a"]}
    assert (checkpointed["type"], checkpointed["reason"]) == ("Normal", "Checkpointed")
    assert checkpointed["message"].startswith(f"Checkpoint {committed['id']} committed: ")
    assert checkpointed["message"].endswith("(trigger: sigterm)")
    assert checkpointed["source"] == {"component": "crikpy", "host": "node-a"}
    assert [e["reason"] for e in events(first.logs(), "event.posted")] == ["Checkpointed"]

    # Pod b, on node-b, restores it and carries on; then it is drained too.
    second = containers(images["counter"], volume=volume, env=pod("b", "node-b"), extra=mount)
    second.wait_for(lambda _: len(counts(second)) >= 3, what="the restored counter")
    assert counts(second)[0] == counts(first)[-1] + 1
    assert second.stop() == 0
    restored, checkpointed_again = about(fake, uids["b"])
    assert (restored["type"], restored["reason"]) == ("Normal", "Restored")
    assert restored["message"].startswith(f"Checkpoint {committed['id']} restored in ")
    assert "s ago)" in restored["message"]
    assert checkpointed_again["reason"] == "Checkpointed"

    # Pod c lands on a node where CRIU cannot run: the restore fails, the checkpoint is kept.
    third = containers(images["counter"], volume=volume, env=pod("c", "node-c"), extra=mount,
                       privileged=False)
    assert third.wait() == 178, third.logs()[-3000:]
    [failed] = about(fake, uids["c"])
    assert (failed["type"], failed["reason"]) == ("Warning", "RestoreFailed")
    assert "CAP_SYS_ADMIN" in failed["message"] and "\n" not in failed["message"]

    received = list(fake.events.values())
    for letter in "bc":
        print(f"\n`kubectl describe pod {POD}` (pod {letter}), rendered by "
              "tests/nodestate/kubectl.py from the Events the fake API server received:\n"
              + describe_events(received, name=POD, namespace="default", uid=uids[letter]))


def test_a_failed_checkpoint_is_a_warning_and_the_workload_gets_its_sigterm(images, containers,
                                                                           volume, fake, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    uid = str(uuid.uuid4())
    env = {"CRIKPY_NAME": "tty", "CRIKPY_KUBERNETES_API_URL": fake.url, "POD_NAME": POD,
           "POD_NAMESPACE": "default", "POD_UID": uid}
    # On a terminal (`tty: true`) crikpy refuses to dump: CRIU could not restore it.
    c = containers(images["counter"], volume=volume, env=env, extra=["-t", "-v",
                                                                     f"{token}:{TOKEN_PATH}:ro"])
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
    assert c.stop() == 128 + 15, "the workload did not get its SIGTERM"
    [failed] = about(fake, uid)
    assert (failed["type"], failed["reason"]) == ("Warning", "CheckpointFailed")
    assert failed["message"].startswith("Checkpoint failed (trigger: sigterm): the workload is "
                                        "on a terminal")
