"""Kubernetes API: the node is leaving when it is cordoned, tainted for removal, or shutting down.

In-cluster, with the pod's service-account token and CA (ApiServer, which crikpy.podevents uses
too); the node's name comes from the downward API ($KUBERNETES_NODE_NAME or $NODE_NAME). A drain
cordons the node first, so a drain counts as leaving: checkpointing then is a planned migration.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

from crikpy.nodestate import Answer, Unavailable
from crikpy.nodestate.query import fetch, parse_json

# Taint keys (or key prefixes, ending in "/") that mean "this node is going away".
LEAVING_TAINTS = (
    "node.kubernetes.io/unschedulable",
    "karpenter.sh/disrupted",
    "ToBeDeletedByClusterAutoscaler",
    "node.kubernetes.io/out-of-service",
    "cloud.google.com/impending-node-termination",
    "aws-node-termination-handler/",
)


class ApiServer:
    """The API server as this pod's service account reaches it: one request, no retries."""

    def __init__(self, url: str, token_path: Path, ca_path: Path) -> None:
        self.url = url.rstrip("/")
        self.token_path, self.ca_path = token_path, ca_path

    def request(self, method: str, path: str, *, timeout: float, body: dict | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body) of any answer; Unavailable when none came in time."""
        headers = {"Accept": "application/json"}
        try:  # read each time: projected service-account tokens are rotated
            headers["Authorization"] = f"Bearer {self.token_path.read_text().strip()}"
        except OSError:
            pass  # out of cluster or no token mounted: ask anonymously
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        context = None
        if self.url.startswith("https:") and self.ca_path.exists():
            context = ssl.create_default_context(cafile=str(self.ca_path))
        return fetch(self.url + path, timeout=timeout, headers=headers, method=method,
                     context=context, data=data)


class KubernetesSource:
    name = "kubernetes"

    def __init__(self, api_url: str, node: str, token_path: Path, ca_path: Path) -> None:
        self.api = ApiServer(api_url, token_path, ca_path)
        self.node = node

    def leaving(self, timeout: float) -> Answer:
        status, body = self.api.request("GET", f"/api/v1/nodes/{self.node}", timeout=timeout)
        if status != 200:
            raise Unavailable(f"node {self.node}: the API server answered HTTP {status}"
                              + (" (RBAC: the pod needs get on nodes)" if status == 403 else ""))
        node = parse_json(body, "the Kubernetes API")
        try:
            return self._judge(node)
        except (KeyError, TypeError, AttributeError) as e:
            raise Unavailable(f"node {self.node}: unexpected node object ({e})") from e

    def _judge(self, node: dict) -> Answer:
        spec, status = node.get("spec") or {}, node.get("status") or {}
        if spec.get("unschedulable"):
            return Answer(True, self.name, f"node {self.node} is cordoned")
        for taint in spec.get("taints") or []:
            key = taint["key"]
            if any(key == t or (t.endswith("/") and key.startswith(t)) for t in LEAVING_TAINTS):
                return Answer(True, self.name, f"node {self.node} has taint {key}")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                message = (condition.get("message") or "").lower()
                if "shutting down" in message or "shutdown" in message:
                    return Answer(True, self.name, f"node {self.node}: {condition['message']}")
        return Answer(False, self.name, f"node {self.node} is schedulable and not shutting down")
