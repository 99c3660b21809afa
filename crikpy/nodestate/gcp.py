"""GCP metadata server: preemption (`instance/preempted`) and host maintenance that terminates.

Every request carries `Metadata-Flavor: Google`, and the answer must carry it back.
`instance/maintenance-event` says TERMINATE_ON_HOST_MAINTENANCE when the VM will be stopped;
MIGRATE_ON_HOST_MAINTENANCE is a live migration, which the workload survives without help.
"""

from __future__ import annotations

from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import fetch


class GcpSource:
    name = "gcp"

    def __init__(self, url: str) -> None:
        self.url = f"{url.rstrip('/')}/computeMetadata/v1/instance"

    def _get(self, path: str, timeout: float) -> str:
        status, body = fetch(f"{self.url}/{path}", timeout=timeout,
                             headers={"Metadata-Flavor": "Google"})
        if status != 200:
            raise Unavailable(f"GCP metadata {path} answered HTTP {status}")
        return body.decode(errors="replace").strip()

    def notice(self, timeout: float) -> str | None:
        preempted = self._get("preempted", timeout)
        if preempted not in ("TRUE", "FALSE"):
            raise Unavailable(f"GCP metadata preempted answered {preempted[:40]!r}")
        if preempted == "TRUE":
            return "preempted"
        event = self._get("maintenance-event", timeout)
        if event.startswith("TERMINATE"):
            return f"maintenance event {event}"
        return None

    def leaving(self, timeout: float) -> Answer:
        notice = self.notice(timeout)
        return Answer(bool(notice), self.name, notice or "not preempted, no terminating maintenance")
