"""The real control plane of tests/harness/kube.sh, as the tests use it: kubectl as the admin or
as a ServiceAccount, tokens from the TokenRequest API, Pods and Nodes, and what a kubelet would
give a pod's container (its downward-API env, its ServiceAccount volume, its ConfigMap).

No kubelet runs here: the tests play its part, with the real objects the API server holds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE_SH = REPO / "tests/harness/kube.sh"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NODE = "localhost"  # the real node's name (kube.sh says why)


class Cluster:
    """etcd, kube-apiserver and kube-controller-manager started by `kube.sh up DIR`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kubeconfig = root / "admin.kubeconfig"
        self.ca = root / "pki/ca.crt"
        ports = dict(kv.split("=") for kv in (root / "ports").read_text().split())
        self.port = int(ports["apiserver_port"])
        self.url = f"https://127.0.0.1:{self.port}"

    @classmethod
    def up(cls, root: Path) -> "Cluster":
        proc = subprocess.run(["bash", str(KUBE_SH), "up", str(root)], capture_output=True,
                              text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"kube.sh up failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return cls(root)

    def down(self) -> None:
        subprocess.run(["bash", str(KUBE_SH), "down", str(self.root)], check=True, timeout=120)

    def add_node(self) -> str:
        """The real node (`kube.sh node`): kubelet, containerd, kube-scheduler. Its name."""
        proc = subprocess.run(["bash", str(KUBE_SH), "node", str(self.root)], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"kube.sh node failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return NODE

    def load_image(self, image: str) -> None:
        """A podman image into the node's containerd, as if pulled (no registry here)."""
        save = subprocess.Popen(["podman", "save", "-q", image], stdout=subprocess.PIPE)
        subprocess.run(["ctr", "--address", str(self.root / "containerd/containerd.sock"),
                        "-n", "k8s.io", "images", "import", "-"], stdin=save.stdout, check=True,
                       capture_output=True, timeout=600)
        assert save.wait() == 0, f"podman save {image} failed"

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                token: str | None = None) -> subprocess.CompletedProcess:
        """kubectl of the same release, as the admin, or as whoever `token` authenticates."""
        auth = ["--kubeconfig", str(self.kubeconfig)]
        if token is not None:  # the cluster and CA only; no client certificate
            auth = ["--kubeconfig", "/dev/null", "--server", self.url,
                    "--certificate-authority", str(self.ca), "--token", token]
        proc = subprocess.run([str(self.root / "bin/kubectl"), *auth, *args], input=stdin,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, documents: list[dict]) -> None:
        """Create or update objects on the server (`kubectl apply`, validated by the server)."""
        self.kubectl("apply", "--server-side", "--field-manager", "crikpy-tests",
                     "--validate=strict", "-f", "-", stdin=yaml.safe_dump_all(documents))

    def install_example(self, overlay: str, workdir: Path) -> tuple[str, str]:
        """`kubectl apply -k` of manifests/examples/OVERLAY into a namespace of its own, with a
        namePrefix, as the component asks of a second namespace. (namespace, prefix)"""
        namespace = self.namespace()
        prefix = f"{namespace}-"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
            "namespace": namespace, "namePrefix": prefix,
            "resources": [os.path.relpath(REPO / "manifests/examples" / overlay, workdir)]}))
        self.kubectl("apply", "--validate=strict", "-k", str(workdir))
        return namespace, prefix

    def namespace(self) -> str:
        """A fresh namespace; the objects of one test live in their own."""
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name

    def token(self, namespace: str, account: str, *, bound_to: dict | None = None,
              seconds: int = 3600) -> str:
        """A ServiceAccount token from the TokenRequest API, as the kubelet asks for one; bound
        to `bound_to` (a Pod or Secret object) it stops working when that object is deleted."""
        args = ["create", "token", account, "-n", namespace, "--duration", f"{seconds}s"]
        if bound_to:
            meta = bound_to["metadata"]
            args += ["--bound-object-kind", bound_to["kind"], "--bound-object-name", meta["name"],
                     "--bound-object-uid", meta["uid"]]
        return self.kubectl(*args).stdout.strip()

    def expired(self, token: str) -> str:
        """`token` as it is once it has expired: its claims with exp an hour ago, signed with
        the cluster's ServiceAccount key as the API server signs. (The TokenRequest API gives
        10 minutes at the least, too long to wait for.)"""
        header, payload, _ = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        now = int(time.time())
        claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
        signed = f"{header}.{_b64(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.root / "pki/service-account.key")],
            input=signed.encode(), capture_output=True, check=True).stdout
        return f"{signed}.{_b64(signature)}"

    def node(self, name: str) -> dict:
        """A Node as a kubelet registers it: Ready, posting its status."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                    "lastTransitionTime": now}]}}
        self.kubectl("create", "-f", "-", stdin=json.dumps(node))
        return self.get("node", name)

    def bind(self, pod: dict, node: str) -> dict:
        """Put a pending pod on a node, as the scheduler does (the pods/binding subresource)."""
        meta = pod["metadata"]
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self.kubectl("create", "--raw",
                     f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                     "-f", "-", stdin=json.dumps(binding))
        return self.get("pod", "-n", meta["namespace"], meta["name"])

    @staticmethod
    def wait_for(predicate, what: str, timeout: float = 60):
        """predicate()'s first true value, polled; an AssertionError naming `what` after
        `timeout` seconds (a bound on a hang, not a measured time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout} s")

    def wait_for_pod(self, namespace: str, name: str, not_uid: str | None = None,
                     timeout: float = 60) -> dict:
        """The pod `name` once its controller has made it (a new one, when `not_uid` is given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
            if proc.returncode == 0:
                pod = json.loads(proc.stdout)
                if pod["metadata"]["uid"] != not_uid and not pod["metadata"].get(
                        "deletionTimestamp"):
                    return pod
            time.sleep(0.2)
        raise AssertionError(f"no pod {namespace}/{name} within {timeout} s")

    def wait_for_pod_of(self, namespace: str, workload: dict, timeout: float = 60) -> dict:
        """A pod that `workload`'s controller made (matched by its selector)."""
        selector = ",".join(f"{k}={v}" for k, v in
                            workload["spec"]["selector"]["matchLabels"].items())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.get("pods", "-n", namespace, "-l", selector)["items"]
            if pods:
                return pods[0]
            time.sleep(0.2)
        events = self.kubectl("get", "events", "-n", namespace).stdout
        raise AssertionError(f"no pod of {workload['metadata']['name']} within {timeout} s; "
                             f"events:\n{events}")

    def _pid(self, component: str) -> int:
        return int((self.root / f"run/{component}.pid").read_text())

    @contextlib.contextmanager
    def apiserver_hung(self):
        """The API server stops answering (SIGSTOP): connections are accepted by the kernel,
        then nothing comes back, as from an overloaded or partitioned one."""
        pid = self._pid("kube-apiserver")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop_apiserver(self) -> None:
        """The API server is down: its process is gone, nothing listens on its port."""
        pid = self._pid("kube-apiserver")
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def start_apiserver(self) -> None:
        """`kube.sh up` starts again what is not running, on the same port."""
        Cluster.up(self.root)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def downward_env(pod: dict, container: str = "crikpy") -> dict[str, str]:
    """The env the kubelet gives `container` of the real `pod`: values, and fieldRefs resolved
    against the pod object as the API server stored it."""
    [spec] = [c for c in pod["spec"]["containers"] if c["name"] == container]
    env = {}
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = _field(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def _field(pod: dict, path: str) -> str:
    """A downward-API fieldPath: metadata.name, spec.nodeName, metadata.labels['key'], ..."""
    if path.startswith("metadata.labels['"):  # one the pod lacks is empty, as the kubelet has it
        return pod["metadata"].get("labels", {}).get(path[len("metadata.labels['"):-2], "")
    value = pod
    for part in path.split("."):
        value = value[part]
    return value


class ServiceAccountVolume:
    """A pod's projected ServiceAccount volume on the host, laid out as the kubelet's
    AtomicWriter does: files are symlinks into `..data`, itself a symlink to a timestamped dir
    that a rotation replaces in one rename, so a reader sees the old or the new token, whole."""

    def __init__(self, root: Path, token: str, ca: Path, namespace: str) -> None:
        self.root, self.ca, self.namespace = root, ca, namespace
        root.mkdir(parents=True)
        self.write(token)
        for name in ("token", "ca.crt", "namespace"):
            (root / name).symlink_to(f"..data/{name}")

    def write(self, token: str) -> None:
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        fresh = self.root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
        fresh.mkdir()
        (fresh / "token").write_text(token)
        (fresh / "ca.crt").write_bytes(self.ca.read_bytes())
        (fresh / "namespace").write_text(self.namespace)
        (self.root / "..data_tmp").symlink_to(fresh.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")
        if old:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()

    def mount(self) -> list[str]:
        """podman arguments that mount it where Kubernetes mounts it in a container."""
        return ["-v", f"{self.root}:{SERVICE_ACCOUNT_DIR}:ro"]


def in_cluster_env(cluster: Cluster) -> dict[str, str]:
    """What every pod's container is given to find the API server (host networking here)."""
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.port)}
