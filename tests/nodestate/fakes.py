"""HTTP servers on 127.0.0.1 that answer like the node-state sources crikpy asks.

No cloud metadata service can run here, so this stands in for them, speaking their protocols as
documented: AWS IMDSv2 (token handshake first), GCP metadata (Metadata-Flavor header both ways),
Azure scheduled events (Metadata header), and crik's node-state server. `mode` makes it slow,
trickling or garbled. It also answers the Kubernetes API's node read, only so that the kubernetes
source can meet those modes, which a real API server (tests/harness/kube.sh, used for all else)
cannot produce on demand.
"""

from __future__ import annotations

import http.server
import json
import time

from tests.helpers import serve

TOKEN = "service-account-token"


def node(name: str = "node-a", *, cordoned: bool = False, taints: list[str] = (),
         ready_message: str = "kubelet is posting ready status") -> dict:
    return {"kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": cordoned,
                     "taints": [{"key": k, "effect": "NoSchedule"} for k in taints]},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady", "message": ready_message}]}}


class FakeNodeState:
    """One server answering all the protocols; tests change its attributes to change answers."""

    def __init__(self) -> None:
        self.nodes = {"node-a": node()}
        self.crik_state = "unknown"
        self.spot_action: dict | None = None
        self.rebalance = False
        self.gcp_preempted = "FALSE"
        self.gcp_maintenance = "NONE"
        self.azure_events: list[dict] = []
        self.mode = ""  # "", "slow", "trickle", "garbage"
        self.imds_tokens: set[str] = set()
        self.requests: list[str] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        serve(self._server)  # close() then takes milliseconds, not 0.5 s
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(fake: FakeNodeState):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status: int, body, headers: dict | None = None) -> None:
            if fake.mode == "slow":
                time.sleep(5)
            if fake.mode == "trickle":  # a whole status line and headers, then a byte at a time
                self.send_response(status)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)  # each read gets a byte well inside any socket timeout
                return
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            if fake.mode == "garbage":
                data = b"<html>proxy error</html>"
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {TOKEN}"

        def do_PUT(self):
            fake.requests.append(f"PUT {self.path}")
            if self.path == "/latest/api/token":
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.answer(400, "missing TTL")
                token = f"imds-{len(fake.imds_tokens)}"
                fake.imds_tokens.add(token)
                return self.answer(200, token)
            self.answer(404, "")

        def do_GET(self):
            fake.requests.append(f"GET {self.path}")
            path = self.path
            if path.startswith("/api/v1/nodes/"):
                if not self.authorized():
                    return self.answer(401, {"kind": "Status", "code": 401})
                name = path.rsplit("/", 1)[1]
                if name not in fake.nodes:
                    return self.answer(404, {"kind": "Status", "code": 404})
                return self.answer(200, fake.nodes[name])
            if path.startswith("/v1/nodes/"):
                return self.answer(200, {"name": path.rsplit("/", 1)[1], "state": fake.crik_state})
            if path.startswith("/latest/meta-data/"):
                if self.headers.get("X-aws-ec2-metadata-token") not in fake.imds_tokens:
                    return self.answer(401, "")
                item = path[len("/latest/meta-data/"):]
                if item == "spot/instance-action" and fake.spot_action:
                    return self.answer(200, fake.spot_action)
                if item == "events/recommendations/rebalance" and fake.rebalance:
                    return self.answer(200, {"noticeTime": "2026-11-22T10:00:00Z"})
                return self.answer(404, "")
            if path.startswith("/computeMetadata/v1/instance/"):
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self.answer(403, "missing Metadata-Flavor")
                item = path.rsplit("/", 1)[1]
                value = {"preempted": fake.gcp_preempted,
                         "maintenance-event": fake.gcp_maintenance}.get(item)
                if value is None:
                    return self.answer(404, "")
                return self.answer(200, value, {"Metadata-Flavor": "Google"})
            if path.startswith("/metadata/scheduledevents"):
                if self.headers.get("Metadata") != "true":
                    return self.answer(400, {"error": "Bad request"})
                return self.answer(200, {"DocumentIncarnation": 1, "Events": fake.azure_events})
            self.answer(404, "")

    return Handler
