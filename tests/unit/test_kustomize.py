"""The kustomize Component manifests/components/crikpy adds crikpy to any StatefulSet or Deployment
whose container is named `crikpy`; every example in manifests/examples is an overlay that uses it.

Each overlay is rendered with the kubectl that tests/harness/setup.sh installs (kustomize v5.6).
That the real API server accepts what they render, and that the component's RBAC grants what
crikpy needs, is tested in tests/kubernetes/test_manifests.py.
"""

import os
from pathlib import Path


from tests.helpers import OVERLAYS, ROOT, render

COMPONENT = ROOT / "manifests" / "components" / "crikpy"
WORKLOAD_KINDS = ("StatefulSet", "Deployment")


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def crikpy_container(workload: dict) -> dict:
    [container] = [c for c in workload["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "crikpy"]
    return container


def test_the_examples_are_the_overlays():
    assert OVERLAYS == ["counter", "deployment", "privileged", "s3-spot"]


def write_app(tmp_path: Path, kustomization: str) -> Path:
    """A workload as a user has it before adopting crikpy: one container, no env, no volumes."""
    (tmp_path / "app.yaml").write_text("""\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: crikpy, image: registry.example.com/web:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  replicas: 1
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker, crikpy.io/name: worker}}
    spec:
      containers:
        - name: crikpy
          image: registry.example.com/worker:1
          env: [{name: QUEUE, value: jobs}]
          volumeMounts: [{name: scratch, mountPath: /scratch}]
      volumes: [{name: scratch, emptyDir: {}}]
""")
    (tmp_path / "config.yaml").write_text("store: s3://bucket/checkpoints\ngracePeriod: 60\n")
    component = os.path.relpath(COMPONENT, tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(kustomization.format(component=component))
    return tmp_path


ADOPTION = """\
resources: [app.yaml]
components: [{component}]
configMapGenerator:
  - {{name: crikpy-config, files: [config.yaml]}}
"""


def test_one_components_line_adds_crikpy_to_a_statefulset_and_a_deployment(tmp_path):
    docs = render(write_app(tmp_path, ADOPTION))
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    by_kind = {d["kind"]: d for d in workloads(docs)}
    assert set(by_kind) == set(WORKLOAD_KINDS)
    for kind, workload in by_kind.items():
        pod = workload["spec"]["template"]["spec"]
        container = crikpy_container(workload)
        env = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"]
               for e in container["env"]}
        assert env["POD_NAME"] == "metadata.name" and env["POD_UID"] == "metadata.uid"
        assert env["POD_NAMESPACE"] == "metadata.namespace"
        assert env["KUBERNETES_NODE_NAME"] == "spec.nodeName"
        # A StatefulSet's pod name is stable; a Deployment's is not, so its name is a label.
        assert env["CRIKPY_NAME"] == {"StatefulSet": "metadata.name",
                                      "Deployment": "metadata.labels['crikpy.io/name']"}[kind]
        # The revision its controller gives the pod template: another one is a new version.
        assert env["CRIKPY_POD_REVISION"] == {
            "StatefulSet": "metadata.labels['controller-revision-hash']",
            "Deployment": "metadata.labels['pod-template-hash']"}[kind]
        assert [e["name"] for e in container["env"]].count("CRIKPY_POD_REVISION") == 1
        assert pod["serviceAccountName"] == "crikpy"
        assert pod["terminationGracePeriodSeconds"] == 60
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/etc/crikpy"]]["configMap"]["name"] == config_map["metadata"]["name"]
        assert volumes[mounts["/proc/sys/kernel/ns_last_pid"]]["hostPath"]["type"] == "File"
        assert container["securityContext"]["capabilities"]["add"] == ["CHECKPOINT_RESTORE"]
    # What the Deployment had is kept.
    worker = crikpy_container(by_kind["Deployment"])
    assert {"name": "QUEUE", "value": "jobs"} in worker["env"]
    assert {"name": "scratch", "mountPath": "/scratch"} in worker["volumeMounts"]


def test_the_node_reader_binding_follows_the_kustomization_namespace(tmp_path):
    docs = render(write_app(tmp_path, "namespace: jobs\n" + ADOPTION))
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "crikpy",
                                    "namespace": "jobs"}]
    [account] = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["namespace"] == "jobs"


def test_a_container_not_named_crikpy_is_not_wired(tmp_path):
    """The component's one requirement: it reaches the container named `crikpy`. Any other name
    renders an extra container without an image, which the API server refuses (applying every
    example to it, tests/kubernetes/test_manifests.py, would catch that)."""
    app = write_app(tmp_path, ADOPTION)
    app_yaml = app / "app.yaml"
    app_yaml.write_text(app_yaml.read_text().replace("name: crikpy,", "name: web,"))
    [sts] = [d for d in render(app) if d["kind"] == "StatefulSet"]
    containers = sts["spec"]["template"]["spec"]["containers"]
    by_name = {c["name"]: c for c in containers}
    assert set(by_name) == {"web", "crikpy"}
    assert "env" not in by_name["web"] and "image" not in by_name["crikpy"]
