"""structlog set-up: JSON lines when stderr is not a terminal, readable key=value when it is.

Events are nouns with key/value context (`checkpoint.dumped bytes=... seconds=...`), one per step.
crikpy logs to stderr so the workload's own stdout stays untouched in `kubectl logs`.
"""

import logging
import sys
import time

import structlog


def configure(level: str = "info") -> None:
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(component: str = "crikpy"):
    return structlog.get_logger(component=component)


class Stopwatch:
    """Seconds since creation, rounded for logs: `seconds=watch.elapsed()`."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return round(time.monotonic() - self._start, 3)
