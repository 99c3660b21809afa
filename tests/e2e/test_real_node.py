"""End to end on a real node: a kubelet 1.37.2 with containerd and runc (tests/harness/kube.sh
node) runs the counter example's StatefulSet pod, with the component's least privilege and
privileged; `kubectl drain` makes the kubelet
send SIGTERM within terminationGracePeriodSeconds, crikpy reads the cordon through the API with
the token the kubelet projected, checkpoints, and the StatefulSet's next pod restores.

What the test adds to the example, and why: the image is the locally built one, loaded into
containerd (no registry here); hostNetwork (no CNI network here); the scheduler profile of the
node (kube.sh says why); a hostPath PersistentVolume for its claim (no storage provisioner); and
CRIKPY_KUBERNETES_API_URL, since no kube-proxy routes the `kubernetes` Service's address.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.e2e.podman import events, numbers
from tests.harness.kube import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node(kube, images):
    name = kube.add_node()
    kube.load_image(images["counter"])
    return name


def install(kube, tmp_path, overlay: str, image: str) -> tuple[str, str]:
    """An example of the counter in a namespace of its own, made to run on the node."""
    namespace = kube.namespace()
    prefix = f"{namespace}-"
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    kube.apply([{"apiVersion": "v1", "kind": "PersistentVolume",
                 "metadata": {"name": f"{namespace}-checkpoints"},
                 "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"],
                          "hostPath": {"path": str(checkpoints), "type": "Directory"},
                          "claimRef": {"namespace": namespace,
                                       "name": f"{prefix}crikpy-checkpoints"}}}])
    name, tag = image.rsplit(":", 1)
    spec = "/spec/template/spec"
    patch = [
        {"op": "add", "path": f"{spec}/schedulerName", "value": "crikpy-node"},
        {"op": "add", "path": f"{spec}/hostNetwork", "value": True},
        {"op": "add", "path": f"{spec}/dnsPolicy", "value": "Default"},
        {"op": "add", "path": f"{spec}/containers/0/imagePullPolicy", "value": "Never"},
        {"op": "add", "path": f"{spec}/containers/0/env/-",
         "value": {"name": "CRIKPY_KUBERNETES_API_URL", "value": kube.url}},
        {"op": "add", "path": f"{spec}/containers/0/env/-",
         "value": {"name": "CRIKPY_CHECKPOINT_ON", "value": "node-shutdown"}},
    ]
    work = tmp_path / "kustomize"
    work.mkdir()
    (work / "kustomization.yaml").write_text(yaml.safe_dump({
        "namespace": namespace, "namePrefix": prefix,
        "resources": [os.path.relpath(REPO / "manifests/examples" / overlay, work)],
        "images": [{"name": "registry.example.com/crikpy-counter", "newName": name,
                    "newTag": tag}],
        "patches": [{"target": {"kind": "StatefulSet"}, "patch": yaml.safe_dump(patch)}]}))
    kube.kubectl("apply", "--validate=strict", "-k", str(work))
    return namespace, f"{prefix}counter-0"


def running_pod(kube, namespace: str, name: str, not_uid: str | None = None) -> dict:
    """The pod once the kubelet runs its container (a new pod, after `not_uid`)."""
    def ready():
        pod = kube.wait_for_pod(namespace, name, not_uid=not_uid)
        statuses = pod["status"].get("containerStatuses") or [{}]
        return pod if statuses[0].get("ready") else None
    return kube.wait_for(ready, what=f"pod {name} running", timeout=180)


def logs(kube, namespace: str, name: str) -> str:
    return kube.kubectl("logs", "-n", namespace, name).stdout


def counts(text: str) -> list[int]:
    return numbers(text.splitlines(), r"^count (\d+)")


# counter: the component's least privilege (CAP_CHECKPOINT_RESTORE, seccomp Unconfined, the
# node's ns_last_pid), as the kubelet and containerd apply it; privileged: privileged: true.
@pytest.mark.parametrize("overlay", ["counter", "privileged"])
def test_kubectl_drain_on_a_real_kubelet_and_the_next_pod_restores(kube, node, images, tmp_path,
                                                                  overlay):
    namespace, name = install(kube, tmp_path, overlay, images["counter"])
    first = running_pod(kube, namespace, name)
    assert first["spec"]["nodeName"] == node
    kube.wait_for(lambda: len(counts(logs(kube, namespace, name))) >= 3, what="three counts")

    # Follow the container's output to its end: the pod object goes with the drain.
    follow = subprocess.Popen([str(kube.root / "bin/kubectl"), "--kubeconfig",
                               str(kube.kubeconfig), "logs", "-f", "-n", namespace, name],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kube.kubectl("drain", node, "--ignore-daemonsets", "--timeout", "120s")
    before, _ = follow.communicate(timeout=60)
    [decision] = events(before, "checkpoint.decision")
    assert (decision["checkpoint"], decision["source"], decision["detail"]) == (
        True, "kubernetes", f"node {node} is cordoned")
    [committed] = events(before, "checkpoint.committed")

    # The node is back from maintenance: the StatefulSet's next pod lands there and restores.
    kube.kubectl("uncordon", node)
    second = running_pod(kube, namespace, name, not_uid=first["metadata"]["uid"])
    after = kube.wait_for(lambda: (text := logs(kube, namespace, name)) and len(counts(text)) >= 3
                          and text, what="the restored counter")
    assert events(after, "restore.done"), after[-3000:]
    assert counts(after)[0] == counts(before)[-1] + 1

    reasons = {(e["involvedObject"]["uid"], e["reason"]) for e in kube.get(
        "events", "-n", namespace, "--field-selector", "source=crikpy")["items"]}
    assert reasons == {(first["metadata"]["uid"], "Checkpointed"),
                       (second["metadata"]["uid"], "Restored")}
    described = kube.kubectl("describe", "pod", "-n", namespace, name).stdout
    assert f"Checkpoint {committed['id']} restored in" in described
    print(f"\n`kubectl describe pod {name}` on the real node, after the drain:\n"
          + described[described.index("Events:"):])
