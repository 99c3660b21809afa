"""Azure scheduled events: Preempt (spot eviction) and Terminate are notices that the VM goes away.

`GET /metadata/scheduledevents?api-version=2020-07-01` with the `Metadata: true` header.
"""

from __future__ import annotations

from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import fetch_json

LEAVING_EVENTS = ("Preempt", "Terminate")


class AzureSource:
    name = "azure"

    def __init__(self, url: str) -> None:
        self.url = f"{url.rstrip('/')}/metadata/scheduledevents?api-version=2020-07-01"

    def notice(self, timeout: float) -> str | None:
        answer = fetch_json(self.url, timeout=timeout, what="Azure scheduled events",
                            headers={"Metadata": "true"})
        events = answer.get("Events") if isinstance(answer, dict) else None
        if not isinstance(events, list):
            raise Unavailable("Azure scheduled events answered without an Events list")
        for event in events:
            kind = event.get("EventType") if isinstance(event, dict) else None
            if kind in LEAVING_EVENTS:
                return f"scheduled event {kind} at {event.get('NotBefore') or 'once approved'}"
        return None

    def leaving(self, timeout: float) -> Answer:
        notice = self.notice(timeout)
        return Answer(bool(notice), self.name, notice or "no Preempt or Terminate event")
