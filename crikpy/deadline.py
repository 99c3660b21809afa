"""The deadline of a checkpoint: the kubelet's SIGKILL, less a reserve for shutting down.

Counted from the moment SIGTERM arrived. Every step of a checkpoint (dump, uploads, retries,
commit) checks it, so a checkpoint that cannot finish in time gives up while the workload can
still be let run on and shut down normally.
"""

from __future__ import annotations

import dataclasses
import time

from crikpy.errors import StoreError


class DeadlineExceeded(StoreError):
    """The store did not finish in time; the checkpoint is abandoned, never half-committed."""


@dataclasses.dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value

    @classmethod
    def for_grace_period(cls, grace_seconds: float, started: float | None = None) -> "Deadline":
        # The workload still needs time to shut down if the checkpoint is abandoned at the end.
        reserve = max(1.0, 0.1 * grace_seconds)
        return cls((started or time.monotonic()) + grace_seconds - reserve)

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"{what} did not finish before the checkpoint deadline")
