"""Kubernetes Events about the pod (crikpy/podevents.py), posted to the fake API server.

No API server can run here: tests/nodestate/fakes.py answers like one (core/v1 Events, bearer
token, 403 without RBAC), and tests/nodestate/kubectl.py shows what `kubectl describe pod` would
print for what it received.
"""

from __future__ import annotations

import datetime
import time

import pytest
from structlog.testing import capture_logs

from crikpy import deadline as deadline_mod
from crikpy.checkpoint.manifest import FileEntry, Manifest, new_id
from crikpy.deadline import ABORT, Deadline
from crikpy.nodestate.kubernetes import ApiServer
from crikpy.podevents import Pod, PodEvents
from crikpy.settings import Settings
from tests.harness.s3server import free_port
from tests.nodestate.fakes import TOKEN
from tests.nodestate.kubectl import describe_events

ABSENT = f"http://127.0.0.1:{free_port()}"  # nothing listens there
POD = Pod(name="counter-0", namespace="default", uid="6f1c2a4e-0d1b-4c9e-9d55-3a2f7b8e1c10",
          node="node-a")


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "serviceaccount" / "token"
    path.parent.mkdir()
    path.write_text(TOKEN + "\n")
    return path


def poster(url, token, pod=POD) -> PodEvents:
    return PodEvents(ApiServer(url, token, token.parent / "no-ca.crt"), pod)


def manifest(size: int = 3 * 1024 * 1024, taken_seconds_ago: float = 75) -> Manifest:
    created = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=taken_seconds_ago)
    return Manifest(id=new_id(created), name="default/counter", created_at=created.isoformat(),
                    command=["counter"], root_pid=9001, stdio={}, additional_paths=[],
                    criu_version="4.2.1", kernel="6.18", hostname="node-a", dump_seconds=0.2,
                    files=[FileEntry("images/pages-1.img", size, "0" * 64)])


def the_event(fake) -> dict:
    [event] = fake.events.values()
    return event


def test_checkpointed_is_a_normal_event_about_the_pod(fake, token):
    m = manifest(size=int(12.5 * 1024 * 1024))
    with capture_logs() as logs:
        poster(fake.url, token).checkpointed(m, seconds=1.84, trigger="sigterm",
                                             deadline=Deadline.after(20))
    event = the_event(fake)
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "counter-0",
                                       "namespace": "default", "uid": POD.uid}
    assert (event["type"], event["reason"]) == ("Normal", "Checkpointed")
    assert event["message"] == (f"Checkpoint {m.id} committed: 12.5 MiB in 1.8 s "
                                "(trigger: sigterm)")
    assert event["source"] == {"component": "crikpy", "host": "node-a"}
    assert event["count"] == 1 and event["firstTimestamp"] == event["lastTimestamp"]
    [posted] = [e for e in logs if e["event"] == "event.posted"]
    assert posted["reason"] == "Checkpointed" and posted["seconds"] < 2


def test_restored_carries_the_checkpoints_age_and_the_seconds(fake, token):
    m = manifest(taken_seconds_ago=200)
    poster(fake.url, token).restored(m, seconds=2.31)
    event = the_event(fake)
    assert (event["type"], event["reason"]) == ("Normal", "Restored")
    assert event["message"] == f"Checkpoint {m.id} restored in 2.3 s (taken 3m20s ago)"


def test_failures_are_warnings_in_one_line(fake, token):
    events = poster(fake.url, token)
    events.checkpoint_failed("periodic", "CRIU failed:\n  Can't dump perf_event\n",
                             deadline=Deadline.after(20))
    events.restore_failed("20261122T100000.000Z-1a2b3c4d", "x" * 5000)
    events.quarantined("20261122T100000.000Z-1a2b3c4d", "sha256 mismatch in images/pages-1.img")
    by_reason = {e["reason"]: e for e in fake.events.values()}
    assert {e["type"] for e in by_reason.values()} == {"Warning"}
    assert by_reason["CheckpointFailed"]["message"] == (
        "Checkpoint failed (trigger: periodic): CRIU failed: Can't dump perf_event")
    restore_failed = by_reason["RestoreFailed"]["message"]
    assert restore_failed.startswith("Restore of checkpoint 20261122T100000.000Z-1a2b3c4d "
                                     "failed: xxx")
    assert len(restore_failed) <= 1024 and restore_failed.endswith("...")
    assert by_reason["Quarantined"]["message"] == (
        "Checkpoint 20261122T100000.000Z-1a2b3c4d quarantined: sha256 mismatch in "
        "images/pages-1.img")


def test_a_repeated_event_is_counted_not_posted_again(fake, token):
    events = poster(fake.url, token)
    for _ in range(3):
        events.checkpoint_failed("periodic", "the workload is on a terminal",
                                 deadline=Deadline.after(20))
    event = the_event(fake)
    assert event["count"] == 3
    assert [r.split(" ")[0] for r in fake.requests] == ["POST", "PATCH", "PATCH"]
    assert "(x3 over" in describe_events(list(fake.events.values()), name="counter-0",
                                         namespace="default", uid=POD.uid)


def test_a_repeat_of_an_event_the_server_dropped_is_posted_anew(fake, token):
    events = poster(fake.url, token)
    events.checkpoint_failed("periodic", "same reason", deadline=Deadline.after(20))
    fake.events.clear()  # events expire (one hour by default)
    events.checkpoint_failed("periodic", "same reason", deadline=Deadline.after(20))
    assert the_event(fake)["count"] == 1


def test_without_rbac_one_warning_then_no_more_posts(fake, token):
    fake.events_forbidden = True
    events = poster(fake.url, token)
    with capture_logs() as logs:
        events.checkpointed(manifest(), seconds=1, trigger="sigterm", deadline=Deadline.after(20))
        events.restored(manifest(), seconds=1)
    [failed] = [e for e in logs if e["event"] == "event.failed"]
    assert failed["log_level"] == "warning" and "create" in failed["action"]
    assert len(fake.requests) == 1, "it kept posting after the API server said Forbidden"


@pytest.mark.parametrize("mode", ["absent", "slow", "unauthorized"])
def test_a_post_that_fails_is_logged_never_raised_and_bounded(fake, token, tmp_path, mode):
    url = ABSENT if mode == "absent" else fake.url
    fake.mode = "slow" if mode == "slow" else ""
    events = poster(url, tmp_path / "no-token" if mode == "unauthorized" else token)
    started = time.monotonic()
    with capture_logs() as logs:
        events.checkpointed(manifest(), seconds=1, trigger="sigterm", deadline=Deadline.after(20))
    assert time.monotonic() - started < 3, "a post outlived its timeout"
    [failed] = [e for e in logs if e["event"] == "event.failed"]
    assert failed["reason"] == "Checkpointed" and failed["error"]


def test_no_post_when_the_deadline_is_short(fake, token):
    with capture_logs() as logs:
        poster(fake.url, token).checkpointed(manifest(), seconds=1, trigger="sigterm",
                                             deadline=Deadline.after(0.5))
    assert not fake.requests
    [skipped] = [e for e in logs if e["event"] == "event.skipped"]
    assert skipped["reason"] == "Checkpointed"


def test_no_post_while_a_sigterm_waits_for_its_own_checkpoint(fake, token, monkeypatch):
    monkeypatch.setattr(deadline_mod, "_sigterm_seen_at", time.monotonic())
    events = poster(fake.url, token)
    events.checkpointed(manifest(), seconds=1, trigger="periodic",
                        deadline=Deadline.for_grace_period(30, on_sigterm=ABORT))
    events.restored(manifest(), seconds=1)
    assert not fake.requests


def test_kubectl_describe_shows_the_events_only_with_the_pods_uid(fake, token):
    poster(fake.url, token).restored(manifest(), seconds=1)
    poster(fake.url, token, Pod("counter-0", "default", None, None)).restored(manifest(),
                                                                             seconds=1)
    assert len(fake.events) == 2
    shown = describe_events(list(fake.events.values()), name="counter-0", namespace="default",
                            uid=POD.uid).splitlines()
    assert shown[:3] == ["Events:", "  Type    Reason    Age   From    Message",
                         "  ----    ------    ----  ----    -------"]
    assert len(shown) == 4, "an event without the pod's UID showed up in describe"
    assert shown[3].split()[:4] == ["Normal", "Restored", "0s", "crikpy"]


# Where the pod and the API server come from: the downward API and the service account.

def settings(token, url="https://10.0.0.1:443", **changes) -> Settings:
    return Settings(name="counter", kubernetes_api_url=url, kubernetes_token_path=str(token),
                    kubernetes_ca_path=str(token.parent / "ca.crt"), **changes)


def test_the_pod_comes_from_the_downward_api(token):
    env = {"POD_NAME": "counter-0", "HOSTNAME": "counter-0-host", "POD_NAMESPACE": "jobs",
           "POD_UID": POD.uid}
    events = PodEvents.from_environment(settings(token, node_name="node-a"), env)
    assert events.pod == Pod("counter-0", "jobs", POD.uid, "node-a")


def test_without_pod_name_hostname_without_namespace_the_service_accounts(token):
    (token.parent / "namespace").write_text("batch")
    with capture_logs() as logs:
        events = PodEvents.from_environment(settings(token), {"HOSTNAME": "counter-0"})
    assert events.pod == Pod("counter-0", "batch", None, None)
    [on] = [e for e in logs if e["event"] == "event.enabled"]
    assert "POD_UID" in on["detail"], "no word on why kubectl describe will not show them"


@pytest.mark.parametrize("missing", ["token", "api", "namespace"])
def test_outside_kubernetes_events_are_off_with_one_line(tmp_path, token, fake, missing):
    env = {"HOSTNAME": "counter-0", "POD_NAMESPACE": "default"}
    if missing == "namespace":
        del env["POD_NAMESPACE"]
    s = settings(tmp_path / "none" if missing == "token" else token,
                 url=None if missing == "api" else fake.url)
    with capture_logs() as logs:
        events = PodEvents.from_environment(s, env)
        events.checkpointed(manifest(), seconds=1, trigger="sigterm", deadline=Deadline.after(20))
    assert [e["event"] for e in logs] == ["event.disabled"]
    assert logs[0]["log_level"] in ("debug", "info")
    assert not fake.requests
