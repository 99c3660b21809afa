"""The Kubernetes example parses and wires crikpy the way crikpy reads its settings."""

from pathlib import Path

import yaml

from crikpy.settings import DEFAULT_CONFIG_PATH, read_config_file

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_statefulset_example_is_wired_for_crikpy(tmp_path):
    docs = {d["kind"]: d for d in yaml.safe_load_all((MANIFESTS / "statefulset.yaml").read_text())}
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"CRIKPY_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == str(DEFAULT_CONFIG_PATH.parent)

    # The ConfigMap's config file is one crikpy accepts.
    config = tmp_path / "config.yaml"
    config.write_text(docs["ConfigMap"]["data"]["config.yaml"])
    assert read_config_file(config, required=True)["store"] == "file://" + mounts["checkpoints"]
