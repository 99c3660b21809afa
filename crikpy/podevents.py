"""Kubernetes Events about this pod: what crikpy did, for `kubectl describe pod` and `kubectl get
events`.

| reason | type | message |
|---|---|---|
| Checkpointed | Normal | id, stored size, seconds, trigger (sigterm, notice, periodic) |
| Restored | Normal | id, seconds, the checkpoint's age |
| CheckpointFailed, RestoreFailed, Quarantined | Warning | the reason, in one line |

They are core/v1 Events. `kubectl describe pod` lists core/v1 Events whose involvedObject is the
pod, UID included, and `kubectl get events` lists core/v1 as well; the kubelet posts its own the
same way. (events.k8s.io/v1 Events land in the same place, but need an eventTime, an action and
a reporting controller for nothing more on screen, and RBAC in another API group.)

The pod: $POD_NAME (else $HOSTNAME, which Kubernetes sets to the pod's name, cut to 63
characters), $POD_NAMESPACE (else the service account's namespace file) and $POD_UID, all from
the downward API. Without the UID the Events are still posted and `kubectl get events` shows them,
but `kubectl describe pod` does not, since it selects by UID. Posted with the service account's
token, as crikpy.nodestate.kubernetes reads the node. Outside Kubernetes (no API server, no
token) they are off, said once at start.

Best effort: a post is one request with a short timeout, made after the commit, never raises, and
is skipped when the deadline cannot spare that timeout, or when a SIGTERM waits for a checkpoint
of its own. A repeat of the same Event (a periodic checkpoint that fails the same way every time)
is counted on the first by a PATCH, as the kubelet's recorder does. Without RBAC for events the
first 403 is logged once, with what to grant, and this process posts no more.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from pathlib import Path
from typing import Mapping

from crikpy import log
from crikpy.checkpoint.manifest import Manifest
from crikpy.deadline import ABORT, Deadline, sigterm_arrived_at
from crikpy.nodestate import Unavailable
from crikpy.nodestate.kubernetes import ApiServer
from crikpy.settings import Settings

POST_TIMEOUT = 2.0  # seconds; the API server answers in-cluster in milliseconds
MESSAGE_LIMIT = 1024  # events.k8s.io's limit on a note; kept so both APIs show the same text
COMPONENT = "crikpy"  # "From" in kubectl describe
# A restore's events wait for nothing but a SIGTERM, whose own checkpoint must not wait for them.
_UNTIL_SIGTERM = Deadline.never(on_sigterm=ABORT)

_log = log.get()


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    uid: str | None
    node: str | None


class PodEvents:
    """Posts this pod's Events; with no API server or no pod it does nothing."""

    def __init__(self, api: ApiServer | None, pod: Pod | None) -> None:
        self.api, self.pod = api, pod
        self._posted: dict[tuple[str, str], tuple[str, int]] = {}  # (reason, message): name, count

    @classmethod
    def off(cls) -> "PodEvents":
        return cls(None, None)

    @classmethod
    def from_environment(cls, settings: Settings, env: Mapping[str, str] | None = None,
                         announce: bool = True) -> "PodEvents":
        """The pod from the downward API, the API server as the service account reaches it."""
        env = os.environ if env is None else env
        token = Path(settings.kubernetes_token_path)
        namespace = env.get("POD_NAMESPACE") or _read(token.parent / "namespace")
        name = env.get("POD_NAME") or env.get("HOSTNAME")
        why_off = None
        if not settings.kubernetes_api_url:
            why_off = "no Kubernetes API server (not in a cluster)"
        elif not token.is_file():
            why_off = f"no service-account token at {token}"
        elif not name or not namespace:
            why_off = "the pod's name or namespace is unknown: set POD_NAME and POD_NAMESPACE " \
                      "from the downward API"
        if why_off:
            if announce:
                _log.info("event.disabled", detail=why_off)
            return cls.off()
        pod = Pod(name, namespace, env.get("POD_UID") or None, settings.node_name)
        if announce:
            _log.info("event.enabled", pod=f"{namespace}/{name}", uid=pod.uid,
                      detail=None if pod.uid else "no POD_UID: `kubectl get events` shows them, "
                      "`kubectl describe pod` does not; set POD_UID from the downward API "
                      "(metadata.uid)")
        return cls(ApiServer(settings.kubernetes_api_url, token,
                             Path(settings.kubernetes_ca_path)), pod)

    def checkpointed(self, manifest: Manifest, seconds: float, trigger: str,
                     deadline: Deadline) -> None:
        self.post("Checkpointed", f"Checkpoint {manifest.id} committed: "
                  f"{_size(manifest.total_bytes)} in {seconds:.1f} s (trigger: {trigger})",
                  deadline)

    def checkpoint_failed(self, trigger: str, reason: str, deadline: Deadline) -> None:
        self.post("CheckpointFailed", f"Checkpoint failed (trigger: {trigger}): {reason}",
                  deadline, warning=True)

    def restored(self, manifest: Manifest, seconds: float) -> None:
        self.post("Restored", f"Checkpoint {manifest.id} restored in {seconds:.1f} s (taken "
                  f"{_age(manifest.created_at)} ago)", _UNTIL_SIGTERM)

    def restore_failed(self, ckpt_id: str, reason: str) -> None:
        self.post("RestoreFailed", f"Restore of checkpoint {ckpt_id} failed: {reason}",
                  _UNTIL_SIGTERM, warning=True)

    def new_version(self, ckpt_id: str, changed: list[str]) -> None:
        self.post("NewVersion", f"Started cold: checkpoint {ckpt_id} is of another version "
                  f"({'; '.join(changed)[:400]}); it is kept aside", _UNTIL_SIGTERM)

    def quarantined(self, ckpt_id: str, reason: str) -> None:
        self.post("Quarantined", f"Checkpoint {ckpt_id} quarantined: {reason}", _UNTIL_SIGTERM,
                  warning=True)

    def post(self, reason: str, message: str, deadline: Deadline, warning: bool = False) -> None:
        """Post one Event, or count a repeat of one; logs the outcome, never raises."""
        if self.api is None or self.pod is None:
            return
        if deadline.on_sigterm == ABORT and sigterm_arrived_at() is not None:
            _log.info("event.skipped", reason=reason, detail="a SIGTERM is waiting")
            return
        if deadline.remaining() < POST_TIMEOUT:
            _log.info("event.skipped", reason=reason, detail="the deadline is near",
                      seconds_left=round(deadline.remaining(), 1))
            return
        message = _one_line(message)
        watch = log.Stopwatch()
        try:
            status, name, count = self._send(reason, message, warning)
        except Exception as e:  # noqa: BLE001  (an Event is never worth an error of crikpy's)
            _log.warning("event.failed", reason=reason, seconds=watch.elapsed(),
                         error=str(e) if isinstance(e, Unavailable)
                         else f"{type(e).__name__}: {e}")
            return
        if status in (200, 201):
            self._posted[(reason, message)] = (name, count)
            _log.info("event.posted", reason=reason, seconds=watch.elapsed(), name=name,
                      count=count)
        elif status == 403:
            self.api = None
            _log.warning("event.failed", reason=reason, seconds=watch.elapsed(),
                         error="HTTP 403 Forbidden",
                         action="grant the pod's service account create and patch on events; "
                                "until then crikpy posts none")
        else:
            _log.warning("event.failed", reason=reason, seconds=watch.elapsed(),
                         error=f"HTTP {status}")

    def _send(self, reason: str, message: str, warning: bool) -> tuple[int, str, int]:
        """(status, the Event's name, its count): a PATCH for a repeat, else a POST."""
        pod, now = self.pod, _now()
        events = f"/api/v1/namespaces/{pod.namespace}/events"
        seen = self._posted.get((reason, message))
        if seen:
            name, count = seen
            status, _ = self.api.request(
                "PATCH", f"{events}/{name}", timeout=POST_TIMEOUT,
                body={"count": count + 1, "lastTimestamp": now},
                content_type="application/merge-patch+json")
            if status != 404:  # 404: it expired (after an hour, by default); post it anew
                return status, name, count + 1
        name = f"{pod.name}.{time.time_ns():x}"  # the kubelet's recorder names them so
        involved = {"apiVersion": "v1", "kind": "Pod", "name": pod.name,
                    "namespace": pod.namespace}
        if pod.uid:
            involved["uid"] = pod.uid
        source = {"component": COMPONENT}
        if pod.node:
            source["host"] = pod.node
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": pod.namespace},
                "involvedObject": involved, "reason": reason, "message": message,
                "type": "Warning" if warning else "Normal", "source": source,
                "reportingComponent": COMPONENT, "reportingInstance": pod.name,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        status, _ = self.api.request("POST", events, timeout=POST_TIMEOUT, body=body)
        return status, name, 1


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= MESSAGE_LIMIT else line[:MESSAGE_LIMIT - 3] + "..."


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def _age(created_at: str) -> str:
    """How long ago `created_at` (ISO 8601) was, as kubectl writes ages: 45s, 3m20s, 2h5m, 3d4h."""
    try:
        created = datetime.datetime.fromisoformat(created_at)
        s = max(0, int((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()))
    except (ValueError, TypeError):
        return "an unknown time"
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
