"""The one HTTP call every node-state source (and the pod's Events) makes: short timeout, no
retries, JSON or text."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Callable, TypeVar

from crikpy.nodestate import Unavailable
from crikpy.tasks import TaskGroup

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T], what: str) -> T:
    """call() as a task of its own, given up on after `seconds` (Unavailable). A socket timeout
    bounds each read, not an answer: a server that trickles one byte at a time would otherwise
    hold a SIGTERM's decision past the grace period."""
    group = TaskGroup("node-state-call", 1)
    task = group.submit(call)
    if not group.join(max(seconds, 0.05)):
        raise Unavailable(f"{what}: no whole answer within {seconds:.1f} s")
    return task.result()


def fetch(url: str, *, timeout: float, headers: dict[str, str] | None = None,
          method: str = "GET", context: ssl.SSLContext | None = None,
          data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) for any answer, 404 included, within `timeout` in all; Unavailable when
    nothing usable came back in time."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})

    def call() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 0.05),
                                        context=context) as resp:
                return resp.status, resp.read(1 << 20)
        except urllib.error.HTTPError as e:
            return e.code, e.read(1 << 20)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
            # HTTPException: a truncated or malformed answer (IncompleteRead, BadStatusLine, ...)
            reason = getattr(e, "reason", e)
            raise Unavailable(f"{url}: {reason}") from e

    return within(timeout, call, url)


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as e:
        raise Unavailable(f"{what} answered something that is not JSON") from e


def fetch_json(url: str, *, timeout: float, what: str,
               headers: dict[str, str] | None = None) -> Any:
    """The JSON of a 200 answer; Unavailable for any other status or for a body that is not JSON."""
    status, body = fetch(url, timeout=timeout, headers=headers)
    if status != 200:
        raise Unavailable(f"{what} answered HTTP {status}")
    return parse_json(body, what)
