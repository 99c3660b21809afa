"""The Kubernetes examples parse and wire crikpy the way crikpy reads its settings."""

from pathlib import Path

import pytest
import yaml

from crikpy.settings import DEFAULT_CONFIG_PATH, read_config_file, resolve

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def load(name: str) -> dict:
    return {d["kind"]: d for d in yaml.safe_load_all((MANIFESTS / name).read_text())}


@pytest.mark.parametrize("name", ["statefulset.yaml", "statefulset-s3-spot.yaml"])
def test_example_is_wired_for_crikpy(name, tmp_path):
    docs = load(name)
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env["CRIKPY_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == str(DEFAULT_CONFIG_PATH.parent)

    # The ConfigMap's config file is one crikpy accepts, in the pod's environment.
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    pod_env = {"HOSTNAME": "trainer-0", "POD_NAMESPACE": "default", "KUBERNETES_NODE_NAME": "n",
               "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    settings = resolve({}, config, pod_env)
    if "checkpoints" in mounts:
        assert read_config_file(config, required=True)["store"] == "file://" + mounts["checkpoints"]
    else:
        assert settings.store.startswith("s3://")
        assert settings.grace_period == pod["terminationGracePeriodSeconds"]


def test_spot_example_can_read_its_node():
    docs = load("statefulset-s3-spot.yaml")
    [rule] = docs["ClusterRole"]["rules"]
    assert rule["resources"] == ["nodes"] and set(rule["verbs"]) == {"get", "list", "watch"}
    assert docs["ClusterRoleBinding"]["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"]
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in pod["containers"][0]["env"]}
    assert env["KUBERNETES_NODE_NAME"] == "spec.nodeName"


def test_spot_example_seals_checkpoints_with_keys_from_a_secret(tmp_path):
    docs = load("statefulset-s3-spot.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    key_file = Path(read_config_file(config, required=True)["encryption_key_file"])
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    mount = mounts[str(key_file.parent)]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "secret" in volume and volume["secret"]["defaultMode"] == 0o400


def test_least_privilege_example_holds_only_what_was_shown_necessary(tmp_path):
    """The securityContext tests/e2e/test_least_privilege.py migrates with, and nothing more."""
    docs = load("statefulset-least-privilege.yaml")
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
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
    resolve({}, config, {"HOSTNAME": "counter-0"})


@pytest.mark.parametrize("name", ["statefulset.yaml", "statefulset-s3-spot.yaml",
                                  "statefulset-least-privilege.yaml"])
def test_example_may_post_events_about_its_pod(name):
    """crikpy/podevents.py: create and patch on core/v1 events in the pod's own namespace, and
    the pod's name, namespace and UID from the downward API (kubectl describe selects by UID)."""
    docs = load(name)
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert docs["ServiceAccount"]["metadata"]["name"] == account
    role, binding = docs["Role"], docs["RoleBinding"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"],
                              "verbs": ["create", "patch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in pod["containers"][0]["env"]}
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["POD_UID"]) == (
        "metadata.name", "metadata.namespace", "metadata.uid")
