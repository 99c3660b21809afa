"""The deadline of a checkpoint: the kubelet's SIGKILL, less a reserve for shutting down.

Counted from the moment SIGTERM arrived, not from when crikpy took it. crikpy blocks signals and
takes them only between steps, so a SIGTERM that comes while it is busy (restoring, or in a
periodic or notice checkpoint) waits, pending. Every deadline check looks for a pending SIGTERM,
as FastFreeze does at its phase boundaries, and the first time one is seen is taken as its
arrival. What a SIGTERM means for a deadline already running depends on the step:
- IGNORE: nothing (a final checkpoint started by that very SIGTERM);
- SHORTEN: the deadline becomes SIGTERM + grace, if that is sooner (a notice checkpoint);
- ABORT: the step stops with Interrupted (a periodic checkpoint, which the final one replaces;
  a download for a restore, which the next pod does again).
Every step of a checkpoint (dump, uploads, retries, commit) checks its deadline, so a checkpoint
that cannot finish in time gives up while the workload can still be let run on and shut down.
"""

from __future__ import annotations

import enum
import math
import signal
import time

from crikpy.errors import Interrupted, StoreError



class OnSigterm(enum.Enum):
    """What a SIGTERM does to a deadline already running (see above)."""

    IGNORE = "ignore"
    SHORTEN = "shorten"
    ABORT = "abort"


IGNORE, SHORTEN, ABORT = OnSigterm.IGNORE, OnSigterm.SHORTEN, OnSigterm.ABORT

_sigterm_seen_at: float | None = None


class DeadlineExceeded(StoreError):
    """The store did not finish in time; the checkpoint is abandoned, never half-committed."""


def sigterm_arrived_at() -> float | None:
    """time.monotonic() when a SIGTERM was first seen pending (or taken); None before that."""
    global _sigterm_seen_at
    if _sigterm_seen_at is None and signal.SIGTERM in signal.sigpending():
        _sigterm_seen_at = time.monotonic()
    return _sigterm_seen_at


def sigterm_seen_before_exec(at: float) -> None:
    """This process, before it re-executed itself, saw a SIGTERM at `at` (time.monotonic() is
    the same clock on both sides of an exec)."""
    global _sigterm_seen_at
    _sigterm_seen_at = at


def sigterm_taken() -> float:
    """The supervisor took a SIGTERM: its arrival time (now, if nobody saw it pending)."""
    global _sigterm_seen_at
    if _sigterm_seen_at is None:
        _sigterm_seen_at = time.monotonic()
    return _sigterm_seen_at


def reserve(grace_seconds: float) -> float:
    """Time kept back from the grace period if a checkpoint fails: for a bounded cleanup (at most
    0.5 s), the workload's own shutdown, and clearing the pointer."""
    return max(2.0, 0.1 * grace_seconds)


class Deadline:
    def __init__(self, at: float, *, on_sigterm: OnSigterm = IGNORE,
                 grace_seconds: float | None = None) -> None:
        self.at = at  # time.monotonic() value
        self.on_sigterm = on_sigterm
        self.grace_seconds = grace_seconds

    @classmethod
    def for_grace_period(cls, grace_seconds: float, started: float | None = None,
                         on_sigterm: OnSigterm = IGNORE) -> "Deadline":
        start = time.monotonic() if started is None else started
        return cls(start + grace_seconds - reserve(grace_seconds), on_sigterm=on_sigterm,
                   grace_seconds=grace_seconds)

    @classmethod
    def after(cls, seconds: float, on_sigterm: OnSigterm = IGNORE) -> "Deadline":
        return cls(time.monotonic() + seconds, on_sigterm=on_sigterm)

    @classmethod
    def never(cls, on_sigterm: OnSigterm = IGNORE) -> "Deadline":
        """No time limit, only the SIGTERM rule (a restore's download)."""
        return cls(math.inf, on_sigterm=on_sigterm)

    def _effective_at(self) -> float:
        if self.on_sigterm == SHORTEN and self.grace_seconds is not None:
            arrived = sigterm_arrived_at()
            if arrived is not None:
                return min(self.at, arrived + self.grace_seconds - reserve(self.grace_seconds))
        return self.at

    def remaining(self) -> float:
        return self._effective_at() - time.monotonic()

    def check(self, what: str) -> None:
        if self.on_sigterm == ABORT and sigterm_arrived_at() is not None:
            raise Interrupted(f"SIGTERM arrived during {what}; stopping it")
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"{what} did not finish before the checkpoint deadline")


def before_sigkill(grace_seconds: float, most: float) -> Deadline:
    """At most `most` seconds from now, and, once a SIGTERM came, a second before the kubelet's
    SIGKILL ends the grace period: for what still runs after a checkpoint is decided."""
    at = time.monotonic() + most
    arrived = sigterm_arrived_at()
    if arrived is not None:
        at = min(at, arrived + grace_seconds - 1.0)
    return Deadline(at)
