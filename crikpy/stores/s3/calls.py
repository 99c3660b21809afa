"""One S3 call: transient failures retried with backoff and jitter within the caller's deadline,
what finally fails translated; and cleanups, one bounded try finished before returning."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, TypeVar

import tenacity

from crikpy.deadline import Deadline, DeadlineExceeded
from crikpy.errors import CrikpyError
from crikpy.stores.s3.errors import describe, is_transient, translate
from crikpy.stores.s3.options import S3Options

CLEANUP_SECONDS = 3.0  # the most a cleanup may take
CLEANUP_GRACE = 0.5  # how far past the caller's deadline, into the shutdown reserve
WAIT_SLICE = 0.25  # how often a wait looks at its deadline (and for a SIGTERM that stops it)
T = TypeVar("T")


class Calls:
    """Runs the S3 calls of one store."""

    def __init__(self, url: str, options: S3Options, log) -> None:
        self.url, self.options, self._log = url, options, log

    def __call__(self, what: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
        """Run one S3 call, retrying transient failures, and translate what finally fails.

        With a deadline the call is also abandoned when the deadline passes mid-request (a
        hung connection must not outlive the grace period); its thread is left to die.
        """
        if deadline is None:
            return self._retrying(what, fn, None)
        deadline.check(what)
        outcome: dict = {}

        def attempt() -> None:
            try:
                outcome["value"] = self._retrying(what, fn, deadline)
            except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
                outcome["error"] = e

        worker = threading.Thread(target=attempt, name="s3-call", daemon=True)
        worker.start()
        while worker.is_alive():  # in slices, so a SIGTERM that stops this step is seen
            try:
                deadline.check(what)
            except DeadlineExceeded:
                raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                       "checkpoint deadline") from None
            worker.join(min(WAIT_SLICE, max(0.0, deadline.remaining())))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

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
            retry=tenacity.retry_if_exception(is_transient), stop=out_of_time,
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),  # "full jitter"
            before_sleep=log_retry, reraise=True, sleep=_sleeper(deadline),
        )
        try:
            return retrying(fn)
        except Exception as e:
            if deadline is not None and deadline.remaining() <= 0.5 and is_transient(e):
                raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                       f"checkpoint deadline (last error: {describe(e)})") from e
            translated = translate(what, e, self.url, self.options.endpoint_url)
            if translated is e:
                raise
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


def _sleeper(deadline: Deadline | None) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline.remaining() - 0.5))
        time.sleep(seconds)
    return sleep
