"""crik's node-state server (`nodeStateServerURL`), so crik deployments keep working.

`GET {url}/v1/nodes/{node}` answers `{"name": ..., "state": "shutting-down" | "unknown"}`.
crik's own client asks `{url}/nodes/{node}`, which its server answers "unknown" for every node,
so crik users whose checkpoints worked wrote `.../v1` into the URL: both spellings work here.
"""

from __future__ import annotations

from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import fetch_json


class CrikSource:
    name = "crik"

    def __init__(self, url: str, node: str) -> None:
        base = url.rstrip("/").removesuffix("/v1")
        self.url = f"{base}/v1/nodes/{node}"
        self.node = node

    def leaving(self, timeout: float) -> Answer:
        answer = fetch_json(self.url, timeout=timeout, what="crik's node-state server")
        state = answer.get("state") if isinstance(answer, dict) else None
        if not isinstance(state, str):
            raise Unavailable("crik's node-state server answered without a state")
        return Answer(state == "shutting-down", self.name, f"node {self.node} state: {state}")
