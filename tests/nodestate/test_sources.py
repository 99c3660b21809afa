"""Each node-state source against a server that answers like the real one (tests/nodestate/fakes.py),
including the absent, slow and garbled cases; then the policy and the notice watcher.

The kubernetes source reads real Node objects from a real API server in
tests/kubernetes/test_node_source.py. Here it meets the test server only for what a real API
server cannot be made to do on demand: answer slowly, trickle a byte at a time, or send garbage.
"""

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
from tests.helpers import free_port
from tests.nodestate.fakes import TOKEN

ABSENT = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def k8s(url, token, name="node-a"):
    return KubernetesSource(url, name, token, token.parent / "no-ca.crt")


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


def test_policy_first_leaving_source_decides(fake):
    fake.crik_state = "shutting-down"
    answer = decide([AwsSource(fake.url), CrikSource(fake.url, "node-a")], 3)
    assert (answer.leaving, answer.source) == (True, "crik")


def test_policy_says_not_leaving_when_all_answer_no(fake):
    answer = decide([CrikSource(fake.url, "node-a"), AwsSource(fake.url)], 3)
    assert answer.leaving is False and answer.source == "crik,aws"


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
