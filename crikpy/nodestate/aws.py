"""AWS instance metadata (IMDSv2): spot interruption notices and rebalance recommendations.

IMDSv2 needs a session token first (PUT /latest/api/token). `spot/instance-action` exists only
once the instance is to be reclaimed (about two minutes ahead): a definite notice.
`events/recommendations/rebalance` means the instance is at elevated risk: it counts as leaving
when SIGTERM arrives, but is not a notice to stop the workload early.
"""

from __future__ import annotations

from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import fetch, parse_json

TOKEN_TTL = "300"


class AwsSource:
    name = "aws"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, timeout: float) -> tuple[int, bytes]:
        status, token = fetch(f"{self.url}/latest/api/token", method="PUT", timeout=timeout,
                              headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL})
        if status != 200 or not token:
            raise Unavailable(f"IMDSv2 token request answered HTTP {status}")
        return fetch(f"{self.url}/latest/meta-data/{path}", timeout=timeout,
                     headers={"X-aws-ec2-metadata-token": token.decode(errors="replace")})

    def notice(self, timeout: float) -> str | None:
        status, body = self._get("spot/instance-action", timeout)
        if status == 404:
            return None
        if status != 200:
            raise Unavailable(f"spot/instance-action answered HTTP {status}")
        action = parse_json(body, "spot/instance-action")
        if not isinstance(action, dict) or "action" not in action:
            raise Unavailable("spot/instance-action answered without an action")
        return f"spot {action['action']} at {action.get('time', '?')}"

    def leaving(self, timeout: float) -> Answer:
        notice = self.notice(timeout)
        if notice:
            return Answer(True, self.name, notice)
        status, _ = self._get("events/recommendations/rebalance", timeout)
        if status == 200:
            return Answer(True, self.name, "rebalance recommendation")
        if status != 404:
            raise Unavailable(f"events/recommendations/rebalance answered HTTP {status}")
        return Answer(False, self.name, "no spot interruption or rebalance notice")
