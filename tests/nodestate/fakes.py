"""HTTP servers on 127.0.0.1 that answer like the node-state sources crikpy asks.

No Kubernetes API server or cloud metadata service can run here, so these stand in for them,
speaking their protocols as documented: the API server's node object and core/v1 Events (create,
and merge-patch to count a repeat; both with a bearer token), crik's node-state server, AWS IMDSv2 (token handshake first), GCP metadata (Metadata-Flavor
header both ways) and Azure scheduled events (Metadata header). `mode` makes them slow or garbled.
"""

from __future__ import annotations

import datetime
import http.server
import json
import re
import ssl
import threading
import time
import uuid

TOKEN = "service-account-token"


def node(name: str = "node-a", *, cordoned: bool = False, taints: list[str] = (),
         ready_message: str = "kubelet is posting ready status") -> dict:
    return {"kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": cordoned,
                     "taints": [{"key": k, "effect": "NoSchedule"} for k in taints]},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady", "message": ready_message}]}}


class FakeNodeState:
    """One server answering all five protocols; tests change its attributes to change answers."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        """`tls`: (certificate, key) files to serve HTTPS, as the real API server does."""
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
        self.events: dict[str, dict] = {}  # Events by name, as stored, in the order created
        self.events_forbidden = False  # answer 403, as without RBAC for events
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_EVENTS = re.compile(r"/api/v1/namespaces/([^/?]+)/events(?:/([^/?]+))?")
# What the API server accepts for a PATCH of an Event (kubectl and client-go use the last two).
_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def status(code: int, reason: str, message: str) -> dict:
    """The API server's error body."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _event_problem(event, namespace: str) -> str | None:
    """What the API server refuses in a core/v1 Event created without eventTime: a body that is
    not an Event, no name, or namespaces that disagree (its legacy validation)."""
    if not isinstance(event, dict) or (event.get("apiVersion"), event.get("kind")) != ("v1",
                                                                                      "Event"):
        return "not a v1 Event"
    meta, involved = event.get("metadata") or {}, event.get("involvedObject") or {}
    if not meta.get("name"):
        return "metadata.name: Required value"
    if meta.get("namespace", namespace) != namespace:
        return "the namespace of the provided object does not match the namespace sent on the request"
    if involved.get("namespace") != namespace:
        return "involvedObject.namespace: Invalid value: does not match event.namespace"
    return None


def _merge(target: dict, patch: dict) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


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

        def body(self):
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                return json.loads(data)
            except ValueError:
                return None

        def events_call(self) -> tuple[str, str | None] | None:
            """(namespace, name) of an events URL; None, after answering, when it is refused."""
            match = _EVENTS.fullmatch(self.path)
            if not match:
                self.answer(404, status(404, "NotFound", "the server could not find the resource"))
                return None
            if not self.authorized():
                self.answer(401, status(401, "Unauthorized", "Unauthorized"))
                return None
            namespace = match.group(1)
            if fake.events_forbidden:
                verb = "patch" if self.command == "PATCH" else "create"
                self.answer(403, status(403, "Forbidden", (
                    f'events is forbidden: User "system:serviceaccount:{namespace}:default" '
                    f'cannot {verb} resource "events" in API group "" in the namespace '
                    f'"{namespace}"')))
                return None
            return namespace, match.group(2)

        def do_POST(self):
            fake.requests.append(f"POST {self.path}")
            call = self.events_call()
            if call is None:
                return
            namespace, name = call
            event = self.body()
            problem = "POST names no object" if name else _event_problem(event, namespace)
            if problem:
                return self.answer(422, status(422, "Invalid", problem))
            name = event["metadata"]["name"]
            if name in fake.events:
                return self.answer(409, status(409, "AlreadyExists",
                                               f'events "{name}" already exists'))
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            event["metadata"] = {**event["metadata"], "namespace": namespace,
                                 "uid": str(uuid.uuid4()), "creationTimestamp": now,
                                 "resourceVersion": str(len(fake.events) + 1)}
            fake.events[name] = event
            self.answer(201, event)

        def do_PATCH(self):
            fake.requests.append(f"PATCH {self.path}")
            call = self.events_call()
            if call is None:
                return
            namespace, name = call
            if self.headers.get("Content-Type") not in _PATCH_TYPES:
                return self.answer(415, status(415, "UnsupportedMediaType",
                                               "the body of the request was in an unknown format"))
            event = fake.events.get(name or "")
            if event is None or event["metadata"]["namespace"] != namespace:
                return self.answer(404, status(404, "NotFound", f'events "{name}" not found'))
            patch = self.body()
            if not isinstance(patch, dict):
                return self.answer(400, status(400, "BadRequest", "invalid JSON patch"))
            _merge(event, patch)
            self.answer(200, event)

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
