"""A fault-injecting HTTP proxy between crikpy and the S3 server, for the retry and deadline tests.

It forwards each request unchanged (so SigV4 signatures stay valid) unless a fault is queued:
`503` answers SlowDown, `reset` drops the connection with a TCP RST, `lost` forwards the request
(the server applies it) and then drops the answer with a TCP RST, so the client's retry meets its
own write (a conditional PUT then gets 412), `delay:S` waits S seconds first, `held:S` waits
S seconds and then forwards only if the client still waits for the answer (a request queued at
a slow server, dropped when its client hangs up), `hang` never answers. Faults can target
requests whose "METHOD path?query" contains a `match` string (e.g.
"DELETE " for deletes only, "partNumber=" for part uploads only), and `persistent` applies one to
every request matching `persistent_match` (all by default) until cleared. With
`ignore_conditions`, a refused conditional write (412) is answered 200 as a server that ignores
If-None-Match/If-Match would (the headers are signed, so they cannot just be dropped). With
`deny_conditions`, every conditional write is answered 403 AccessDenied, as by a policy that
allows plain writes only.
`answered` records the server's status for each forwarded request (also when the answer is then
lost), and `max_in_flight` how many requests were open at once (only those for which
`count_if(method, path, headers)` is true, when it is set).
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
import time
from collections import deque

from tests.helpers import serve

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied.</Message></Error>")


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.queue: deque[tuple[str, str]] = deque()  # (fault, match)
        self.persistent: str | None = None
        self.persistent_match = ""  # `persistent` applies to requests whose "METHOD path" has it
        self.seen: list[tuple[str, str, str]] = []  # (method, path, fault or "")
        self.answered: list[tuple[str, str, int]] = []  # (method, path, the server's status)
        self.ignore_conditions = False
        self.deny_conditions = False
        self.in_flight = self.max_in_flight = 0
        self.count_if = None
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        serve(self._server)  # close() then takes milliseconds, not 0.5 s
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, fault: str, times: int = 1, match: str = "") -> None:
        with self._lock:
            self.queue.extend([(fault, match)] * times)

    def next_fault(self, method: str, path: str) -> str:
        with self._lock:
            if self.persistent and self.persistent_match in f"{method} {path}":
                return self.persistent
            for i, (fault, match) in enumerate(self.queue):
                if match in f"{method} {path}":
                    del self.queue[i]
                    return fault
        return ""

    def faults_seen(self) -> list[str]:
        return [f for _, _, f in self.seen if f]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(proxy: FaultProxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _relay(self):
            counted = proxy.count_if is None or proxy.count_if(self.command, self.path,
                                                                self.headers)
            with proxy._lock:
                proxy.in_flight += counted
                proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
            try:
                self._relay_one()
            finally:
                with proxy._lock:
                    proxy.in_flight -= counted

        def _relay_one(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy.next_fault(self.command, self.path)
            proxy.seen.append((self.command, self.path, fault))
            if fault == "reset":
                self._reset()
                return
            if fault == "hang":
                time.sleep(3600)
                return
            if fault.startswith(("delay:", "held:")):
                time.sleep(float(fault.split(":")[1]))
            if fault.startswith("held:") and self._client_gone():
                return
            conditional = "If-None-Match" in self.headers or "If-Match" in self.headers
            if self.command == "PUT" and conditional and proxy.deny_conditions:
                self._answer_error(403, ACCESS_DENIED)
                return
            if fault == "503":
                self._answer_error(503, SLOWDOWN)
                return
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
            upstream.close()
            proxy.answered.append((self.command, self.path, resp.status))
            if fault == "lost":  # the server has applied the request; its answer never arrives
                self._reset()
                return
            if resp.status == 412 and proxy.ignore_conditions:
                self.send_response(200)
                self.send_header("ETag", '"ignored-condition"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
            self.send_header("Content-Length", str(length or 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _answer_error(self, status: int, body: bytes) -> None:
            """An S3 error answer of the proxy's own, in place of the server's."""
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _client_gone(self) -> bool:
            try:
                return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        def _reset(self):
            """Drop the connection to the client with a TCP RST (SO_LINGER 0)."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler
