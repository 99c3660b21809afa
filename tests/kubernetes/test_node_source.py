"""The kubernetes node-state source (crikpy/nodestate/kubernetes.py) reading real Node objects
from a real API server, with the crikpy ServiceAccount's real token: what `kubectl cordon`,
`kubectl drain`, `kubectl taint` and a kubelet's shutdown condition leave on a Node is what it
judges. (A slow, trickling or garbled answer, which a real server cannot give on demand, is in
tests/nodestate/test_sources.py, against a test server.)"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from crikpy.nodestate import Unavailable
from crikpy.nodestate.kubernetes import KubernetesSource
from crikpy.nodestate.policy import decide

SHUTTING_DOWN = {"status": {"conditions": [{
    "type": "Ready", "status": "False", "reason": "KubeletNotReady",
    "message": "node is shutting down"}]}}  # the kubelet's node-shutdown manager's words


@pytest.fixture(scope="module")
def account(kube, tmp_path_factory):
    """The example's crikpy ServiceAccount and its token file, as mounted in the pod."""
    namespace, prefix = kube.install_example("counter", tmp_path_factory.mktemp("counter"))
    token = tmp_path_factory.mktemp("serviceaccount") / "token"
    token.write_text(kube.token(namespace, f"{prefix}crikpy") + "\n")
    return token


@pytest.fixture
def node(kube):
    name = f"node-{uuid.uuid4().hex[:8]}"
    kube.node(name)
    yield name
    kube.kubectl("delete", "node", name, "--wait=false")


def source(kube, token, node) -> KubernetesSource:
    return KubernetesSource(kube.url, node, token, kube.ca)


def test_an_untouched_node_is_not_leaving(kube, account, node):
    answer = source(kube, account, node).leaving(3)
    assert (answer.leaving, answer.source) == (False, "kubernetes")
    assert "schedulable and not shutting down" in answer.detail


def test_kubectl_cordon(kube, account, node):
    kube.kubectl("cordon", node)
    answer = source(kube, account, node).leaving(3)
    assert answer.leaving and answer.detail == f"node {node} is cordoned"


def test_kubectl_drain_and_the_taint_the_controller_adds(kube, account, node):
    kube.kubectl("drain", node, "--ignore-daemonsets", "--timeout", "60s")
    # The node-lifecycle controller adds the cordon's taint (TaintNodesByCondition).
    kube.wait_for(lambda: any(t["key"] == "node.kubernetes.io/unschedulable"
                              for t in kube.get("node", node)["spec"].get("taints", [])),
                  what="the unschedulable taint")
    assert source(kube, account, node).leaving(3).leaving


@pytest.mark.parametrize("taint, leaving", [
    ("karpenter.sh/disrupted:NoSchedule", True),
    ("ToBeDeletedByClusterAutoscaler=1733486400:NoSchedule", True),
    ("aws-node-termination-handler/spot-itn=1733486400:NoExecute", True),
    ("cloud.google.com/impending-node-termination:NoSchedule", True),
    ("node.kubernetes.io/out-of-service=nodeshutdown:NoExecute", True),
    ("dedicated=gpu:NoSchedule", False),
])
def test_kubectl_taint(kube, account, node, taint, leaving):
    kube.kubectl("taint", "nodes", node, taint)
    answer = source(kube, account, node).leaving(3)
    assert answer.leaving is leaving, answer.detail
    if leaving:
        assert answer.detail == f"node {node} has taint {taint.split('=')[0].split(':')[0]}"


def test_the_kubelets_graceful_shutdown_condition(kube, account, node):
    kube.kubectl("patch", "node", node, "--subresource", "status", "--type", "strategic",
                 "-p", json.dumps(SHUTTING_DOWN))
    answer = source(kube, account, node).leaving(3)
    assert answer.leaving and answer.detail == f"node {node}: node is shutting down"


def test_the_decision_through_the_real_api(kube, account, node):
    assert decide([source(kube, account, node)], 3).leaving is False
    kube.kubectl("cordon", node)
    assert decide([source(kube, account, node)], 3).leaving is True


def test_a_token_the_api_server_does_not_know_is_401(kube, tmp_path, node):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
    with pytest.raises(Unavailable, match="HTTP 401"):
        source(kube, token, node).leaving(3)


def test_an_account_without_the_cluster_role_is_403_naming_the_grant(kube, tmp_path, node):
    namespace = kube.namespace()
    kube.kubectl("create", "serviceaccount", "-n", namespace, "crikpy")
    token = tmp_path / "token"
    token.write_text(kube.token(namespace, "crikpy"))
    with pytest.raises(Unavailable, match=r"HTTP 403 \(RBAC: the pod needs get on nodes\)"):
        source(kube, token, node).leaving(3)


def test_an_unknown_node_is_404(kube, account):
    with pytest.raises(Unavailable, match="HTTP 404"):
        source(kube, account, "no-such-node").leaving(3)


def test_the_server_certificate_is_checked_against_the_mounted_ca(kube, account, node, tmp_path):
    other_ca = tmp_path / "ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=another-ca", "-keyout", str(tmp_path / "ca.key"),
                    "-out", str(other_ca)], check=True, capture_output=True)
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        KubernetesSource(kube.url, node, account, other_ca).leaving(3)


def test_a_hung_api_server_gives_no_answer_within_the_timeout(kube, account, node):
    with kube.apiserver_hung():
        assert decide([source(kube, account, node)], 1.0) is None
