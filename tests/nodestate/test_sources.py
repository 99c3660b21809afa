"""Each node-state source against a server that answers like the real one (tests/nodestate/fakes.py),
including the absent, slow and garbled cases; then the policy and the notice watcher."""

from __future__ import annotations

import time

import pytest

from crikpy.nodestate import Unavailable
from crikpy.nodestate.aws import AwsSource
from crikpy.nodestate.azure import AzureSource
from crikpy.nodestate.crik import CrikSource
from crikpy.nodestate.gcp import GcpSource
from crikpy.nodestate.kubernetes import KubernetesSource
from crikpy.nodestate.policy import NoticeWatcher, decide
from tests.harness.s3server import free_port
from tests.nodestate.fakes import TOKEN, FakeNodeState, node

ABSENT = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def k8s(url, token, name="node-a"):
    return KubernetesSource(url, name, token, token.parent / "no-ca.crt")


@pytest.mark.parametrize("state, leaving, detail", [
    (node(), False, "schedulable"),
    (node(cordoned=True), True, "cordoned"),
    (node(taints=["karpenter.sh/disrupted"]), True, "karpenter.sh/disrupted"),
    (node(taints=["ToBeDeletedByClusterAutoscaler"]), True, "ToBeDeleted"),
    (node(taints=["aws-node-termination-handler/spot-itn"]), True, "spot-itn"),
    (node(taints=["cloud.google.com/impending-node-termination"]), True, "impending"),
    (node(taints=["dedicated"]), False, "schedulable"),
    (node(ready_message="node is shutting down"), True, "shutting down"),
])
def test_kubernetes_node_states(fake, token, state, leaving, detail):
    fake.nodes["node-a"] = state
    answer = k8s(fake.url, token).leaving(2)
    assert answer.leaving is leaving and detail in answer.detail and answer.source == "kubernetes"


def test_kubernetes_sends_the_service_account_token(fake, token, tmp_path):
    assert k8s(fake.url, token).leaving(2).leaving is False
    with pytest.raises(Unavailable, match="HTTP 401"):
        k8s(fake.url, tmp_path / "missing-token").leaving(2)


def test_kubernetes_unknown_node(fake, token):
    with pytest.raises(Unavailable, match="HTTP 404"):
        k8s(fake.url, token, name="node-z").leaving(2)


@pytest.mark.parametrize("make", [
    lambda url, token: k8s(url, token),
    lambda url, token: CrikSource(url, "node-a"),
    lambda url, token: AwsSource(url),
    lambda url, token: GcpSource(url),
    lambda url, token: AzureSource(url),
], ids=["kubernetes", "crik", "aws", "gcp", "azure"])
@pytest.mark.parametrize("mode", ["absent", "slow", "trickle", "garbage"])
def test_every_source_says_unavailable_when_absent_slow_or_garbled(fake, token, make, mode):
    url = ABSENT if mode == "absent" else fake.url
    fake.mode = mode if mode != "absent" else ""
    source = make(url, token)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        source.leaving(0.5)
    assert time.monotonic() - started < 4, "a source outlived its timeout"


@pytest.mark.parametrize("state, leaving", [("shutting-down", True), ("unknown", False)])
def test_crik_node_state_server(fake, state, leaving):
    fake.crik_state = state
    assert CrikSource(fake.url, "node-a").leaving(2).leaving is leaving


def test_aws_imdsv2_handshake_and_notices(fake):
    aws = AwsSource(fake.url)
    assert aws.leaving(2).leaving is False and aws.notice(2) is None
    assert "PUT /latest/api/token" in fake.requests  # IMDSv2: a token before any read

    fake.rebalance = True
    assert aws.leaving(2).leaving is True and aws.notice(2) is None  # risk, not a notice

    fake.spot_action = {"action": "terminate", "time": "2026-11-22T10:02:00Z"}
    assert aws.notice(2) == "spot terminate at 2026-11-22T10:02:00Z"
    assert aws.leaving(2).leaving is True


def test_gcp_metadata(fake):
    gcp = GcpSource(fake.url)
    assert gcp.leaving(2).leaving is False
    fake.gcp_maintenance = "MIGRATE_ON_HOST_MAINTENANCE"
    assert gcp.notice(2) is None  # live migration: nothing to do
    fake.gcp_maintenance = "TERMINATE_ON_HOST_MAINTENANCE"
    assert "TERMINATE" in gcp.notice(2)
    fake.gcp_maintenance, fake.gcp_preempted = "NONE", "TRUE"
    assert gcp.notice(2) == "preempted"


def test_azure_scheduled_events(fake):
    azure = AzureSource(fake.url)
    fake.azure_events = [{"EventType": "Freeze", "NotBefore": "soon"}]
    assert azure.leaving(2).leaving is False
    fake.azure_events.append({"EventType": "Preempt", "NotBefore": "Mon, 23 Nov 2026 10:00:00 GMT"})
    assert "Preempt" in azure.notice(2)


def test_policy_first_leaving_source_decides(fake, token):
    fake.nodes["node-a"] = node()
    fake.crik_state = "shutting-down"
    answer = decide([k8s(fake.url, token), CrikSource(fake.url, "node-a")], 3)
    assert (answer.leaving, answer.source) == (True, "crik")


def test_policy_says_not_leaving_when_all_answer_no(fake, token):
    answer = decide([k8s(fake.url, token), AwsSource(fake.url)], 3)
    assert answer.leaving is False and answer.source == "kubernetes,aws"


def test_policy_is_bounded_by_its_timeout_whatever_the_sources_do(fake, token):
    """Sources that trickle their answers, one of them making several requests (AWS): the
    decision still comes within its timeout, so the SIGTERM is never held past it."""
    fake.mode = "trickle"
    started = time.monotonic()
    assert decide([AwsSource(fake.url), k8s(fake.url, token)], timeout=1.0) is None
    assert time.monotonic() - started < 2.5, "the decision outlived its timeout"


def test_policy_without_answers_gives_none(fake):
    fake.mode = "slow"
    assert decide([CrikSource(fake.url, "node-a"), AwsSource(ABSENT)], 1) is None


def test_notice_watcher_reports_the_first_notice(fake):
    watcher = NoticeWatcher([CrikSource(fake.url, "n"), AwsSource(fake.url)], interval=0.2).start()
    try:
        time.sleep(0.5)
        assert watcher.notice is None
        fake.spot_action = {"action": "stop", "time": "2026-11-22T10:02:00Z"}
        deadline = time.monotonic() + 10
        while watcher.notice is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (watcher.source, watcher.notice) == ("aws", "spot stop at 2026-11-22T10:02:00Z")
        assert watcher.seen_at is not None
    finally:
        watcher.stop()


def test_kubernetes_in_cluster_https_with_the_service_account_ca(tmp_path, token):
    # In-cluster, the API server speaks HTTPS with a certificate signed by the cluster CA that is
    # mounted beside the token; a server with a self-signed certificate plays both parts here.
    import subprocess

    cert, key = tmp_path / "ca.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    fake = FakeNodeState(tls=(str(cert), str(key)))
    try:
        fake.nodes["node-a"] = node(cordoned=True)
        source = KubernetesSource(fake.url, "node-a", token, cert)
        assert source.leaving(3).leaving is True
        with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
            KubernetesSource(fake.url, "node-a", token, tmp_path / "no-ca.crt").leaving(3)
    finally:
        fake.close()
