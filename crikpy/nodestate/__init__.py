"""Is my node leaving? One small module per source of that answer, and a policy combining them.

Every source answers `leaving(timeout)` with an Answer, or raises Unavailable when it cannot say
(absent, slow, garbled). Cloud sources also report `notice(timeout)`: a definite interruption
notice (spot reclaim, preemption, scheduled termination) that comes before SIGTERM.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Answer:
    leaving: bool
    source: str
    detail: str


class Unavailable(Exception):
    """A source could not answer (not there, too slow, or made no sense)."""
