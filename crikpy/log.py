"""structlog set-up: JSON lines when stderr is not a terminal, readable key=value when it is.

Events are nouns with key/value context (`checkpoint.dumped bytes=... seconds=...`), one per step.
crikpy logs to stderr so the workload's own stdout stays untouched in `kubectl logs`.
"""

import logging
import re
import resource
import sys
import threading
import time

import structlog


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def scrubbed(text: str) -> str:
    """`text` with any credentials in a URL (`http://user:password@host`) masked."""
    return _URL_CREDENTIALS.sub("***@", text)


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters shown as `\\xNN`. What the store holds
    (a quarantine reason, a CRIU message naming the checkpoint's files) may come from anyone
    who can write the store, and must not drive the reader's terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _scrub(_logger, _name, event: dict) -> dict:
    return {k: scrubbed(v) if isinstance(v, str) else v for k, v in event.items()}


def _printable(_logger, _name, event: dict) -> dict:
    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}


def configure(level: str = "info") -> None:
    if sys.stderr.isatty():
        rendering = [_printable, structlog.dev.ConsoleRenderer(colors=False)]
    else:  # a traceback becomes a field of its one JSON line, never lines of its own
        rendering = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *args: _LineLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


class _LineLogger(structlog.PrintLogger):
    """Writes each line to stderr; a line that cannot be written (the log collector is gone:
    EPIPE) is lost, never an error. PID 1 must outlive its log."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):  # ValueError: the file was closed
            pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def get(component: str = "crikpy"):
    return structlog.get_logger(component=component)


class Stopwatch:
    """Seconds since creation, rounded for logs: `seconds=watch.elapsed()`."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return round(time.monotonic() - self._start, 3)


class TransferProgress:
    """Counts bytes as they move and logs `transfer.progress` every few seconds.

    Pass it as a store's `progress` callback; a person watching a long upload sees bytes,
    percent and MB/s go by.
    """

    def __init__(self, direction: str, total_bytes: int, interval: float = 3.0, **context) -> None:
        self.done = 0
        self.total = total_bytes
        self._interval = interval
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._log = get().bind(direction=direction, **context)

    def __call__(self, n: int) -> None:
        with self._lock:  # streamed uploads report from threads of their own
            self.done += n
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
        if self.total:
            self._log.info("transfer.progress", bytes=self.done, total_bytes=self.total,
                           percent=round(100 * self.done / self.total, 1), mb_per_s=self.rate())
        else:  # a stream: its size is known only at its end
            self._log.info("transfer.progress", bytes=self.done, mb_per_s=self.rate())

    def rate(self) -> float:
        return round(self.done / 1e6 / max(time.monotonic() - self._started, 1e-6), 1)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (shows that transfers stay bounded)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
