"""The kubelet's part, played by the tests for pods of the real API server (no kubelet runs here):
a Pod's crikpy container runs in podman with what a kubelet gives it (the downward-API env
resolved from the Pod object, KUBERNETES_SERVICE_HOST/PORT, the ServiceAccount volume with a
token from the TokenRequest API bound to the Pod, the crikpy-config ConfigMap at /etc/crikpy),
and a pod that is deleted gets its SIGTERM within terminationGracePeriodSeconds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e import podman
from tests.harness.kube import Cluster, ServiceAccountVolume, downward_env, in_cluster_env


class Kubelet:
    def __init__(self, kube: Cluster, containers, workdir: Path, image: str, volume: Path) -> None:
        self.kube, self.containers, self.workdir = kube, containers, workdir
        self.image, self.volume = image, volume

    def run(self, pod: dict, *, env: dict[str, str] | None = None, token: str | None = None,
            privileged: bool = True, extra: list[str] = ()) -> tuple[podman.Container,
                                                                     ServiceAccountVolume]:
        """Start `pod`'s container; its ServiceAccount volume comes back too, for rotations."""
        meta, spec = pod["metadata"], pod["spec"]
        home = self.workdir / meta["uid"]
        if token is None:
            token = self.kube.token(meta["namespace"], spec["serviceAccountName"], bound_to=pod)
        account = ServiceAccountVolume(home / "serviceaccount", token, self.kube.ca,
                                       meta["namespace"])
        [config_volume] = [v for v in spec["volumes"] if v["name"] == "crikpy-config"]
        config_map = self.kube.get("configmap", "-n", meta["namespace"],
                                   config_volume["configMap"]["name"])
        config = home / "config"
        config.mkdir()
        for name, text in config_map["data"].items():
            (config / name).write_text(text)
        container = self.containers(
            self.image, volume=self.volume, privileged=privileged,
            env={**in_cluster_env(self.kube), **downward_env(pod), **(env or {})},
            extra=["--hostname", meta["name"], *account.mount(),
                   "-v", f"{config}:/etc/crikpy:ro", *extra])
        return container, account

    def stop(self, pod: dict, container: podman.Container) -> int:
        """The pod is deleted (a drain's eviction, a rollout): SIGTERM, then SIGKILL after the
        grace period; once the container is gone, the Pod object goes too. Its exit code."""
        code = container.stop(timeout=pod["spec"]["terminationGracePeriodSeconds"])
        self.remove(pod)
        return code

    def remove(self, pod: dict) -> None:
        """What the kubelet does last for a deleted pod: delete it with no grace left."""
        meta = pod["metadata"]
        self.kube.kubectl("delete", "pod", "-n", meta["namespace"], meta["name"],
                          "--grace-period", "0", "--force", "--ignore-not-found")


def drain(kube: Cluster, node: str) -> subprocess.Popen:
    """`kubectl drain NODE` in the background: it cordons, evicts, and waits for the pods to go."""
    return subprocess.Popen([str(kube.root / "bin/kubectl"), "--kubeconfig", str(kube.kubeconfig),
                             "drain", node, "--ignore-daemonsets", "--timeout", "180s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Counter:
    """The counter example in a namespace of its own: its StatefulSet's pods, put on nodes."""

    def __init__(self, kube, kubelet_of, tmp_path) -> None:
        self.kube = kube
        self.namespace, prefix = kube.install_example("counter", tmp_path / "kustomize")
        [self.sts] = kube.get("statefulsets", "-n", self.namespace)["items"]
        self.name = f"{prefix}counter-0"
        self.kubelet = kubelet_of("counter")

    def node(self, label: str) -> str:
        name = f"{self.namespace}-{label}"
        self.kube.node(name)
        return name

    def pod_on(self, node: str, after: dict | None = None) -> dict:
        """The StatefulSet's pod (a new one after `after`), scheduled on `node`."""
        pod = self.kube.wait_for_pod(self.namespace, self.name,
                                     not_uid=after and after["metadata"]["uid"])
        return self.kube.bind(pod, node)


@pytest.fixture
def kubelet_of(kube, images, containers, volume, tmp_path):
    """Kubelet for one of the e2e images: `kubelet_of("counter")`."""
    return lambda image: Kubelet(kube, containers, tmp_path / "pods", images[image], volume)


@pytest.fixture
def counter(kube, kubelet_of, tmp_path) -> Counter:
    return Counter(kube, kubelet_of, tmp_path)
