"""Kubernetes Events about the pod (crikpy/podevents.py) on a real API server: posted with the
crikpy ServiceAccount's real token about a real Pod (made by the example's StatefulSet), read
back as the server stored them, and shown by the real `kubectl describe pod` and
`kubectl get events`."""

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
from tests.helpers import free_port, sample_describe


class Place:
    """A namespace with the counter example applied: its ServiceAccount's token and its pod."""

    def __init__(self, kube, workdir) -> None:
        self.kube = kube
        self.namespace, prefix = kube.install_example("counter", workdir / "kustomize")
        self.account = f"{prefix}crikpy"
        [sts] = kube.get("statefulsets", "-n", self.namespace)["items"]
        node = f"node-{self.namespace}"
        kube.node(node)
        self.pod = kube.bind(kube.wait_for_pod_of(self.namespace, sts), node)
        meta = self.pod["metadata"]
        self.name, self.uid = meta["name"], meta["uid"]
        self.token = workdir / "serviceaccount" / "token"
        self.token.parent.mkdir()
        self.token.write_text(kube.token(self.namespace, self.account, bound_to=self.pod))

    def poster(self, uid: str | None = "same", token=None) -> PodEvents:
        pod = Pod(self.name, self.namespace, self.uid if uid == "same" else uid,
                  self.pod["spec"]["nodeName"])
        return PodEvents(ApiServer(self.kube.url, token or self.token, self.kube.ca), pod)

    def events(self) -> list[dict]:
        """crikpy's Events in the namespace, as the API server stored them, oldest first."""
        items = self.kube.get("events", "-n", self.namespace)["items"]
        return sorted((e for e in items if e.get("reportingComponent") == "crikpy"),
                      key=lambda e: e["metadata"]["creationTimestamp"])

    def describe(self) -> list[str]:
        """The Events section of `kubectl describe pod`, one line each, unindented."""
        text = self.kube.kubectl("describe", "pod", "-n", self.namespace, self.name).stdout
        return [line.strip() for line in text[text.index("\nEvents:"):].strip().splitlines()]


@pytest.fixture
def place(kube, tmp_path) -> Place:
    return Place(kube, tmp_path)


def manifest(size: int = 3 * 1024 * 1024, taken_seconds_ago: float = 75) -> Manifest:
    created = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=taken_seconds_ago)
    return Manifest(**sample_describe(
        id=new_id(created), name="default/counter", created_at=created.isoformat(),
        command=["counter"], hostname="node-a", dump_seconds=0.2,
        files=[FileEntry("images/pages-1.img", size, "0" * 64)]))


def test_checkpointed_is_a_normal_event_about_the_pod(place):
    m = manifest(size=int(12.5 * 1024 * 1024))
    with capture_logs() as logs:
        place.poster().checkpointed(m, seconds=1.84, trigger="sigterm",
                                    deadline=Deadline.after(20))
    [event] = place.events()
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": place.name,
                                       "namespace": place.namespace, "uid": place.uid}
    assert (event["type"], event["reason"]) == ("Normal", "Checkpointed")
    assert event["message"] == (f"Checkpoint {m.id} committed: 12.5 MiB in 1.8 s "
                                "(trigger: sigterm)")
    assert event["source"] == {"component": "crikpy", "host": place.pod["spec"]["nodeName"]}
    assert event["count"] == 1 and event["firstTimestamp"] == event["lastTimestamp"]
    [posted] = [e for e in logs if e["event"] == "event.posted"]
    assert posted["reason"] == "Checkpointed"
    [shown] = place.describe()[3:]
    assert shown.split()[:2] == ["Normal", "Checkpointed"] and shown.endswith(event["message"])
    assert shown.split()[3] == "crikpy"


def test_restored_carries_the_checkpoints_age_and_the_seconds(place):
    m = manifest(taken_seconds_ago=200)
    place.poster().restored(m, seconds=2.31)
    [event] = place.events()
    assert (event["type"], event["reason"]) == ("Normal", "Restored")
    assert event["message"] == f"Checkpoint {m.id} restored in 2.3 s (taken 3m20s ago)"


def test_failures_are_warnings_in_one_line_the_server_accepts(place):
    events = place.poster()
    events.checkpoint_failed("periodic", "CRIU failed:\n  Can't dump perf_event\n",
                             deadline=Deadline.after(20))
    events.restore_failed("20261122T100000.000Z-1a2b3c4d", "x" * 5000)
    events.quarantined("20261122T100000.000Z-1a2b3c4d", "sha256 mismatch in images/pages-1.img")
    by_reason = {e["reason"]: e for e in place.events()}
    assert set(by_reason) == {"CheckpointFailed", "RestoreFailed", "Quarantined"}
    assert {e["type"] for e in by_reason.values()} == {"Warning"}
    assert by_reason["CheckpointFailed"]["message"] == (
        "Checkpoint failed (trigger: periodic): CRIU failed: Can't dump perf_event")
    restore_failed = by_reason["RestoreFailed"]["message"]
    assert restore_failed.startswith("Restore of checkpoint 20261122T100000.000Z-1a2b3c4d "
                                     "failed: xxx")
    assert len(restore_failed) <= 1024 and restore_failed.endswith("...")


def test_a_repeated_event_is_counted_and_kubectl_shows_the_count(place):
    events = place.poster()
    for _ in range(3):
        events.checkpoint_failed("periodic", "the workload is on a terminal",
                                 deadline=Deadline.after(20))
    [event] = place.events()
    assert event["count"] == 3 and event["lastTimestamp"] >= event["firstTimestamp"]
    [line] = [ln for ln in place.describe() if "CheckpointFailed" in ln]
    assert "(x3 over" in line, place.describe()
    listed = place.kube.kubectl("get", "events", "-n", place.namespace,
                                "--field-selector", "reason=CheckpointFailed").stdout
    assert "the workload is on a terminal" in listed


def test_a_repeat_of_an_event_that_expired_is_posted_anew(place):
    events = place.poster()
    events.checkpoint_failed("periodic", "same reason", deadline=Deadline.after(20))
    [first] = place.events()
    # Events expire (the API server's --event-ttl, an hour by default): gone, as after one.
    place.kube.kubectl("delete", "event", "-n", place.namespace, first["metadata"]["name"])
    events.checkpoint_failed("periodic", "same reason", deadline=Deadline.after(20))
    [again] = place.events()
    assert again["count"] == 1 and again["metadata"]["name"] != first["metadata"]["name"]


def test_a_role_taken_away_is_one_warning_then_no_more_posts(place):
    binding = place.kube.get("rolebinding", "-n", place.namespace)["items"][0]
    place.kube.kubectl("delete", "rolebinding", "-n", place.namespace,
                       binding["metadata"]["name"])
    events = place.poster()
    with capture_logs() as logs:
        events.checkpointed(manifest(), seconds=1, trigger="sigterm", deadline=Deadline.after(20))
        events.restored(manifest(), seconds=1)
    [failed] = [e for e in logs if e["event"] == "event.failed"]
    assert failed["log_level"] == "warning" and failed["error"] == "HTTP 403 Forbidden"
    assert "create and patch on events" in failed["action"]
    # Granted again, this process still posts nothing: it stopped asking at the first 403.
    binding["metadata"] = {"name": binding["metadata"]["name"], "namespace": place.namespace}
    place.kube.apply([binding])
    events.restored(manifest(), seconds=1)
    assert place.events() == []


@pytest.mark.parametrize("mode", ["absent", "hung", "unauthorized"])
def test_a_post_that_fails_is_logged_never_raised_and_bounded(place, tmp_path, mode):
    events = place.poster()
    if mode == "absent":
        events.api = ApiServer(f"https://127.0.0.1:{free_port()}", place.token, place.kube.ca)
    elif mode == "unauthorized":
        (tmp_path / "bad-token").write_text("not-a-token")
        events = place.poster(token=tmp_path / "bad-token")
    with capture_logs() as logs:
        if mode == "hung":
            with place.kube.apiserver_hung():
                events.checkpointed(manifest(), seconds=1, trigger="sigterm",
                                    deadline=Deadline.after(20))
        else:
            events.checkpointed(manifest(), seconds=1, trigger="sigterm",
                                deadline=Deadline.after(20))
    [failed] = [e for e in logs if e["event"] == "event.failed"]
    assert failed["reason"] == "Checkpointed" and failed["error"]
    if mode == "unauthorized":
        assert failed["error"] == "HTTP 401"


def test_no_post_when_the_deadline_is_short(place):
    with capture_logs() as logs:
        place.poster().checkpointed(manifest(), seconds=1, trigger="sigterm",
                                    deadline=Deadline.after(0.5))
    assert place.events() == []
    [skipped] = [e for e in logs if e["event"] == "event.skipped"]
    assert skipped["reason"] == "Checkpointed"


def test_no_post_while_a_sigterm_waits_for_its_own_checkpoint(place, monkeypatch):
    monkeypatch.setattr(deadline_mod, "_sigterm_seen_at", time.monotonic())
    events = place.poster()
    events.checkpointed(manifest(), seconds=1, trigger="periodic",
                        deadline=Deadline.for_grace_period(30, on_sigterm=ABORT))
    events.restored(manifest(), seconds=1)
    assert place.events() == []


def test_kubectl_describe_shows_the_events_only_with_the_pods_uid(place):
    place.poster().restored(manifest(), seconds=1)
    place.poster(uid=None).checkpointed(manifest(), seconds=1, trigger="sigterm",
                                        deadline=Deadline.after(20))
    assert len(place.events()) == 2, "kubectl get events lists both"
    shown = place.describe()
    assert shown[:3] == ["Events:", "Type    Reason    Age   From    Message",
                         "----    ------    ----  ----    -------"], shown
    assert len(shown) == 4, f"an Event without the pod's UID showed up in describe: {shown}"
    assert shown[3].split()[:2] == ["Normal", "Restored"] and "crikpy" in shown[3]


# Where the pod and the API server come from: the downward API and the service account.

def settings(token, url="https://10.0.0.1:443", **changes) -> Settings:
    return Settings(name="counter", kubernetes_api_url=url, kubernetes_token_path=str(token),
                    kubernetes_ca_path=str(token.parent / "ca.crt"), **changes)


def test_the_pod_comes_from_the_downward_api(tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    uid = "6f1c2a4e-0d1b-4c9e-9d55-3a2f7b8e1c10"
    env = {"POD_NAME": "counter-0", "HOSTNAME": "counter-0-host", "POD_NAMESPACE": "jobs",
           "POD_UID": uid}
    events = PodEvents.from_environment(settings(token, node_name="node-a"), env)
    assert events.pod == Pod("counter-0", "jobs", uid, "node-a")


def test_without_pod_name_hostname_without_namespace_the_service_accounts(tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    (tmp_path / "namespace").write_text("batch")
    with capture_logs() as logs:
        events = PodEvents.from_environment(settings(token), {"HOSTNAME": "counter-0"})
    assert events.pod == Pod("counter-0", "batch", None, None)
    [on] = [e for e in logs if e["event"] == "event.enabled"]
    assert "POD_UID" in on["detail"], "no word on why kubectl describe will not show them"


@pytest.mark.parametrize("missing", ["token", "api", "namespace"])
def test_outside_kubernetes_events_are_off_with_one_line(kube, place, tmp_path, missing):
    env = {"HOSTNAME": place.name, "POD_NAMESPACE": place.namespace}
    if missing == "namespace":
        del env["POD_NAMESPACE"]
    s = settings(tmp_path / "none" if missing == "token" else place.token,
                 url=None if missing == "api" else kube.url)
    with capture_logs() as logs:
        events = PodEvents.from_environment(s, env)
        events.checkpointed(manifest(), seconds=1, trigger="sigterm", deadline=Deadline.after(20))
    assert [e["event"] for e in logs] == ["event.disabled"]
    assert logs[0]["log_level"] in ("debug", "info")
    assert place.events() == []
