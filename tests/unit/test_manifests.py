"""The Kubernetes examples (kustomize overlays in manifests/examples, rendered with the
component manifests/components/crikpy) wire crikpy the way crikpy reads its settings."""

from pathlib import Path

import pytest

from crikpy.settings import DEFAULT_CONFIG_PATH, read_config_file, resolve
from tests.helpers import EXAMPLES, OVERLAYS, render

# What a pod of the examples has in its environment (the component's downward-API env, in-cluster).
POD_ENV = {"HOSTNAME": "trainer-0", "POD_NAMESPACE": "default", "KUBERNETES_NODE_NAME": "n",
           "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def load(name: str) -> dict:
    """An example rendered, by kind; its one workload also as "workload"."""
    docs = {d["kind"]: d for d in render(EXAMPLES / name)}
    [docs["workload"]] = [docs[k] for k in ("StatefulSet", "Deployment") if k in docs]
    return docs


@pytest.mark.parametrize("name", OVERLAYS)
def test_example_is_wired_for_crikpy(name, tmp_path):
    docs = load(name)
    pod = docs["workload"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["privileged"] is (name == "privileged")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
           for e in container["env"] if "valueFrom" in e}
    # The pod's name where it is stable (a StatefulSet's), else the label the example sets.
    identity = {"StatefulSet": "metadata.name",
                "Deployment": "metadata.labels['crikpy.io/name']"}[docs["workload"]["kind"]]
    assert env["CRIKPY_NAME"] == identity and env["POD_NAMESPACE"] == "metadata.namespace"
    if docs["workload"]["kind"] == "Deployment":
        assert docs["workload"]["spec"]["template"]["metadata"]["labels"]["crikpy.io/name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["crikpy-config"] == str(DEFAULT_CONFIG_PATH.parent)

    # The ConfigMap's config file is one crikpy accepts, in the pod's environment.
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    settings = resolve({}, config, POD_ENV)
    if "checkpoints" in mounts:
        assert read_config_file(config, required=True)["store"] == "file://" + mounts["checkpoints"]
    else:
        assert settings.store.startswith("s3://")
    assert settings.grace_period == pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_example_can_read_its_node(name):
    docs = load(name)
    [rule] = docs["ClusterRole"]["rules"]
    assert rule["resources"] == ["nodes"] and set(rule["verbs"]) == {"get", "list", "watch"}
    assert docs["ClusterRoleBinding"]["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"]
    pod = docs["workload"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
           for e in pod["containers"][0]["env"] if "valueFrom" in e}
    assert env["KUBERNETES_NODE_NAME"] == "spec.nodeName"


def test_spot_example_seals_checkpoints_with_keys_from_a_secret(tmp_path):
    docs = load("s3-spot")
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    key_file = Path(read_config_file(config, required=True)["encryption_key_file"])
    pod = docs["workload"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    mount = mounts[str(key_file.parent)]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "secret" in volume and volume["secret"]["defaultMode"] == 0o400


@pytest.mark.parametrize("name", [n for n in OVERLAYS if n != "privileged"])
def test_least_privilege_example_holds_only_what_was_shown_necessary(name, tmp_path):
    """The securityContext tests/e2e/test_least_privilege.py migrates with, and nothing more:
    what the component gives every workload."""
    docs = load(name)
    pod = docs["workload"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHECKPOINT_RESTORE"]}
    assert context["seccompProfile"] == {"type": "Unconfined"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["ns-last-pid"] == "/proc/sys/kernel/ns_last_pid"
    assert volumes["ns-last-pid"]["hostPath"] == {"path": "/proc/sys/kernel/ns_last_pid",
                                                   "type": "File"}
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    resolve({}, config, POD_ENV)


@pytest.mark.parametrize("name", OVERLAYS)
def test_example_may_post_events_about_its_pod(name):
    """crikpy/podevents.py: create and patch on core/v1 events in the pod's own namespace, and
    the pod's name, namespace and UID from the downward API (kubectl describe selects by UID)."""
    docs = load(name)
    pod = docs["workload"]["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert docs["ServiceAccount"]["metadata"]["name"] == account
    role, binding = docs["Role"], docs["RoleBinding"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"],
                              "verbs": ["create", "patch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
           for e in pod["containers"][0]["env"] if "valueFrom" in e}
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["POD_UID"]) == (
        "metadata.name", "metadata.namespace", "metadata.uid")
