"""One S3 call: transient failures retried with backoff and jitter within the caller's deadline,
what finally fails translated; and cleanups, one bounded try finished before returning.

A call runs in the thread that makes it: none is started per request, so none outlives its
deadline. Instead every attempt is bounded from inside botocore (a `before-send` hook): it is
not sent once the deadline has passed or its transfer has stopped, and its read timeout is cut
to what is left of the deadline (with the request, or through its connection pool on an older
botocore), so a hung server ends the attempt at the deadline.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, TypeVar

import tenacity
import urllib3

import botocore.exceptions

from crikpy.deadline import Deadline, DeadlineExceeded
from crikpy.errors import CrikpyError, StoreError
from crikpy.stores.s3.errors import describe, is_transient, translate
from crikpy.stores.s3.options import S3Options

CLEANUP_SECONDS = 3.0  # the most a cleanup may take
CLEANUP_GRACE = 0.5  # how far past the caller's deadline, into the shutdown reserve
WAIT_SLICE = 0.25  # how often a wait looks at its deadline (and for a SIGTERM that stops it)
T = TypeVar("T")


class Calls:
    """Runs the S3 calls of one store."""

    def __init__(self, client, url: str, options: S3Options, log) -> None:
        self.url, self.options, self._log = url, options, log
        self._current = threading.local()  # the call this thread is making, for the hook
        self._client = client
        client.meta.events.register("before-send.s3", self._before_send)

    def __call__(self, what: str, fn: Callable[[], T], deadline: Deadline | None = None,
                 stop: threading.Event | None = None) -> T:
        """Run one S3 call, retrying transient failures, and translate what finally fails.

        `stop`, once set, ends the call at its next attempt: a transfer that failed stops its
        other parts.
        """
        if deadline is not None:
            deadline.check(what)
        outer = getattr(self._current, "call", None)
        self._current.call = (what, deadline, stop)
        try:
            return self._retrying(what, fn, deadline)
        except DeadlineExceeded as e:
            if str(e) == f"{what} did not finish before the checkpoint deadline":  # Deadline's
                raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                       "checkpoint deadline") from None
            raise
        finally:
            self._current.call = outer

    def _before_send(self, request, **_) -> None:
        call = getattr(self._current, "call", None)
        if call is None:
            self._bound_attempt(request, self.options.read_timeout)
            return
        what, deadline, stop = call
        if stop is not None and stop.is_set():
            raise _Stopped(f"{what} in {self.url} stopped: its transfer failed")
        seconds = self.options.read_timeout
        if deadline is not None:
            deadline.check(what)  # past it, or a SIGTERM that stops this step
            if math.isfinite(deadline.at):
                seconds = max(0.05, min(seconds, deadline.remaining()))
        self._bound_attempt(request, seconds)

    def _bound_attempt(self, request, seconds: float) -> None:
        """This attempt's read timeout. Newer botocore (1.38+) takes it with the request; an
        older one (Debian trixie's 1.37, in crikpy's image) reads it from the connection pool
        the request is about to use, which every call of this store sets the same way, so it
        follows the one deadline the calls under way share (a checkpoint's)."""
        if hasattr(request, "context"):
            request.context["read_timeout"] = seconds
            return
        try:
            session = self._client._endpoint.http_session
            proxy = session._proxy_config.proxy_url_for(request.url)
            pool = session._get_connection_manager(request.url, proxy).connection_from_url(
                request.url)
            pool.timeout = urllib3.Timeout(connect=self.options.connect_timeout, read=seconds)
        except AttributeError:
            pass  # another botocore: its client-wide read timeout bounds each attempt

    def _retrying(self, what: str, fn: Callable[[], T], deadline: Deadline | None) -> T:
        started = time.monotonic()

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            if deadline is not None and math.isfinite(deadline.at):
                return deadline.remaining() <= 0.5
            # No time limit (a restore's download): a store that keeps failing is a store fault.
            return time.monotonic() - started > self.options.retry_seconds

        def log_retry(state: tenacity.RetryCallState) -> None:
            self._log.warning("store.retry", call=what, attempt=state.attempt_number,
                              error=describe(state.outcome.exception()))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_retryable), stop=out_of_time,
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),  # "full jitter"
            before_sleep=log_retry, reraise=True, sleep=_sleeper(deadline),
        )
        try:
            return retrying(fn)
        except botocore.exceptions.HTTPClientError as e:
            inner = e.kwargs.get("error")
            if isinstance(inner, CrikpyError):  # the body reader's: the deadline, a SIGTERM
                raise inner from None
            return self._failed(what, e, deadline)
        except Exception as e:  # noqa: BLE001  (translated, or re-raised as it is)
            return self._failed(what, e, deadline)

    def _failed(self, what: str, e: Exception, deadline: Deadline | None):
        """Raise what a person can act on, for the failure a call ended with."""
        if deadline is not None and deadline.remaining() <= 0.5 and is_transient(e):
            raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                   f"checkpoint deadline (last error: {describe(e)})") from e
        translated = translate(what, e, self.url, self.options.endpoint_url)
        if translated is e:
            raise e
        raise translated from e

    def cleanup(self, what: str, fn: Callable[[], object],
                deadline: Deadline | None = None) -> None:
        """One bounded try, finished before returning; a miss is swept at a later commit.

        Past the caller's deadline it may take CLEANUP_GRACE more: the rest of the shutdown
        reserve belongs to the workload.
        """
        seconds = CLEANUP_SECONDS
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline.remaining()) + CLEANUP_GRACE)
        try:
            self(what, fn, Deadline.after(seconds))
        except CrikpyError as e:
            self._log.warning("store.cleanup_failed", call=what, error=str(e),
                              detail="swept at the next commit, or by the bucket's lifecycle "
                                     "rule for incomplete multipart uploads")


class _Stopped(StoreError):
    """A part's call, ended because another part of its transfer failed."""


def _retryable(e: BaseException) -> bool:
    if isinstance(e, botocore.exceptions.HTTPClientError) \
            and isinstance(e.kwargs.get("error"), CrikpyError):
        return False
    return is_transient(e)


def _sleeper(deadline: Deadline | None) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline.remaining() - 0.5))
        time.sleep(seconds)
    return sleep
