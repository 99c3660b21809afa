"""End to end: Kubernetes Events tell a migration's story: Checkpointed, Restored, RestoreFailed.

The counter example is applied to the real API server (tests/harness/kube.sh); its StatefulSet
makes each pod (same name, a new UID), and tests/e2e/kubelet.py runs the pod's container with
what a kubelet gives it: the downward API resolved from the Pod, a token of the crikpy
ServiceAccount bound to the Pod. What the API server stored is read back, and the real
`kubectl describe pod` and `kubectl get events` show it (printed with `pytest -s`, and in the
docs/kubernetes.md, Events).
"""

from __future__ import annotations

import pytest

from tests.e2e.evidence import counts
from tests.e2e.kubelet import Counter
from tests.e2e.podman import events

pytestmark = pytest.mark.e2e


def about(kube, pod: dict) -> list[dict]:
    """The Events the API server holds about `pod` (by UID), oldest first."""
    meta = pod["metadata"]
    items = kube.get("events", "-n", meta["namespace"], "--field-selector",
                     f"involvedObject.uid={meta['uid']}")["items"]
    return sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])


def describe(kube, pod: dict) -> str:
    meta = pod["metadata"]
    text = kube.kubectl("describe", "pod", "-n", meta["namespace"], meta["name"]).stdout
    return text[text.index("Events:"):].rstrip()


def test_events_tell_the_story_of_a_migration(kube, kubelet_of, tmp_path):
    counter = Counter(kube, kubelet_of, tmp_path)
    nodes = [counter.node(letter) for letter in "abc"]

    # The first pod starts cold; its node is cordoned (as a drain begins), then SIGTERM.
    first = counter.pod_on(nodes[0])
    c1, _ = counter.kubelet.run(first)
    c1.wait_for(lambda _: len(counts(c1)) >= 3, what="three counts")
    kube.kubectl("cordon", nodes[0])
    c1.stop()
    committed = events(c1.logs(), "checkpoint.committed")[0]
    [checkpointed] = about(kube, first)
    meta = first["metadata"]
    assert checkpointed["involvedObject"] == {"apiVersion": "v1", "kind": "Pod",
                                              "name": meta["name"],
                                              "namespace": meta["namespace"], "uid": meta["uid"]}
    assert (checkpointed["type"], checkpointed["reason"]) == ("Normal", "Checkpointed")
    assert checkpointed["message"].startswith(f"Checkpoint {committed['id']} committed: ")
    assert checkpointed["message"].endswith("(trigger: sigterm)")
    assert checkpointed["source"] == {"component": "crikpy", "host": nodes[0]}
    assert [e["reason"] for e in events(c1.logs(), "event.posted")] == ["Checkpointed"]
    counter.kubelet.remove(first)

    # The next pod, on node-b, restores it and carries on; then its node is cordoned too.
    second = counter.pod_on(nodes[1], after=first)
    c2, _ = counter.kubelet.run(second)
    c2.wait_for(lambda _: len(counts(c2)) >= 3, what="the restored counter")
    assert counts(c2)[0] == counts(c1)[-1] + 1
    kube.kubectl("cordon", nodes[1])
    assert c2.stop() == 0
    restored, checkpointed_again = about(kube, second)
    assert (restored["type"], restored["reason"]) == ("Normal", "Restored")
    assert restored["message"].startswith(f"Checkpoint {committed['id']} restored in ")
    assert "s ago)" in restored["message"]
    assert checkpointed_again["reason"] == "Checkpointed"
    shown_second = describe(kube, second)
    assert [line.split()[1] for line in shown_second.splitlines()[3:]] == ["Restored",
                                                                          "Checkpointed"]
    counter.kubelet.remove(second)

    # The third lands on a node where CRIU cannot run: the restore fails, the checkpoint is kept.
    third = counter.pod_on(nodes[2], after=second)
    c3, _ = counter.kubelet.run(third, privileged=False)
    assert c3.wait() == 178, c3.logs()[-3000:]
    [failed] = about(kube, third)
    assert (failed["type"], failed["reason"]) == ("Warning", "RestoreFailed")
    assert "CAP_SYS_ADMIN" in failed["message"] and "\n" not in failed["message"]
    shown_third = describe(kube, third)
    assert "Warning  RestoreFailed" in shown_third

    listed = kube.kubectl("get", "events", "-n", counter.namespace, "--field-selector",
                          "source=crikpy").stdout
    assert [line.split()[2] for line in listed.splitlines()[1:]] == [
        "Checkpointed", "Restored", "Checkpointed", "RestoreFailed"], listed
    name = counter.name
    print(f"\n`kubectl describe pod {name}`, the pod that restored and was drained again:\n"
          f"{shown_second}\n\nThe next pod, on a node without the privileges:\n{shown_third}\n\n"
          f"`kubectl get events --field-selector source=crikpy`:\n{listed}")


def test_a_failed_checkpoint_is_a_warning_and_the_workload_gets_its_sigterm(kube, kubelet_of,
                                                                           tmp_path):
    counter = Counter(kube, kubelet_of, tmp_path)
    pod = counter.pod_on(counter.node("a"))
    # On a terminal (`tty: true`) crikpy refuses to dump: CRIU could not restore it.
    c, _ = counter.kubelet.run(pod, extra=["-t"])
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
    assert c.stop() == 128 + 15, "the workload did not get its SIGTERM"
    [failed] = about(kube, pod)
    assert (failed["type"], failed["reason"]) == ("Warning", "CheckpointFailed")
    assert failed["message"].startswith("Checkpoint failed (trigger: sigterm): the workload is "
                                        "on a terminal")
