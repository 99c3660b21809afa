"""What kubectl would print for the Events the fake API server received (tests/nodestate/fakes.py).

No API server or kubectl runs here, so this renders the "Events:" section of `kubectl describe
pod` the way kubectl's DescribeEvents does (k8s.io/kubectl/pkg/describe): it lists core/v1 Events
whose involvedObject matches the pod's name, namespace, kind and, when the pod has one, UID (so an
Event without the pod's UID is not shown), sorts them by lastTimestamp, and prints Type, Reason,
Age (with "(xN over ...)" for a repeated Event), From (source.component) and Message through a
tabwriter with two spaces of padding. Ages follow apimachinery's duration.HumanDuration.
"""

from __future__ import annotations

import datetime


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, up to days."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"


def _parse(timestamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _tabwriter(rows: list[list[str]], padding: int = 2) -> list[str]:
    """Go's text/tabwriter with minwidth 0 and padding 2: every cell but a line's last is padded
    to its column's widest cell plus the padding."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return ["".join(cell.ljust(widths[i] + padding) for i, cell in enumerate(row[:-1])) + row[-1]
            for row in rows]


def describe_events(events: list[dict], *, name: str, namespace: str, uid: str | None,
                    now: datetime.datetime | None = None) -> str:
    """The "Events:" section of `kubectl describe pod NAME` for `events` (Event objects)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    wanted = {"name": name, "namespace": namespace, "kind": "Pod"}
    if uid:
        wanted["uid"] = uid
    shown = [e for e in events
             if all((e.get("involvedObject") or {}).get(k) == v for k, v in wanted.items())]
    if not shown:
        return "Events:  <none>"
    shown.sort(key=lambda e: _parse(e["lastTimestamp"]))
    rows = [["  Type", "Reason", "Age", "From", "Message"],
            ["  ----", "------", "----", "----", "-------"]]
    for e in shown:
        first = human_duration((now - _parse(e["firstTimestamp"])).total_seconds())
        age = first
        if e.get("count", 1) > 1:
            last = human_duration((now - _parse(e["lastTimestamp"])).total_seconds())
            age = f"{last} (x{e['count']} over {first})"
        rows.append([f"  {e['type']}", e["reason"], age, e["source"]["component"],
                     e["message"].strip()])
    return "\n".join(["Events:", *_tabwriter(rows)])
