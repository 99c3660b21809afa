"""The one HTTP call every node-state source (and the pod's Events) makes: short timeout, no
retries, JSON or text."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from crikpy.nodestate import Unavailable


def fetch(url: str, *, timeout: float, headers: dict[str, str] | None = None,
          method: str = "GET", context: ssl.SSLContext | None = None,
          data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) for any answer, 404 included; Unavailable when nothing usable came back."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=max(timeout, 0.05), context=context) as resp:
            return resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 20)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        # HTTPException: a truncated or malformed answer (IncompleteRead, BadStatusLine, ...)
        reason = getattr(e, "reason", e)
        raise Unavailable(f"{url}: {reason}") from e


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
