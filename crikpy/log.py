"""structlog set-up: JSON lines when stderr is not a terminal, readable key=value when it is.

Events are nouns with key/value context (`checkpoint.dumped bytes=... seconds=...`), one per step.
crikpy logs to stderr so the workload's own stdout stays untouched in `kubectl logs`.

PID 1 never waits on its log: when stderr is a pipe (a container's log), crikpy writes to a
non-blocking description of its own, so a log shipper that stops reading holds lines back (up
to 1 MiB, then drops them and says how many) instead of stopping signal forwarding.
"""

import json
import logging
import os
import re
import resource
import select
import stat
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
    if os.isatty(2):
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
        logger_factory=lambda *args: _LineLogger(),
        cache_logger_on_first_use=False,
    )


class _LineLogger:
    """structlog's logger: each rendered event is one line for the sink."""

    def msg(self, message: str) -> None:
        line(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _Sink:
    """Log lines to fd 2, never blocking for long. A line that cannot be written now waits in
    `pending` (at most HELD_BYTES) for the next write; beyond that it is dropped and counted.
    A reader that is gone (EPIPE) loses the lines, never raises: PID 1 outlives its log."""

    HELD_BYTES = 1024 * 1024

    def __init__(self) -> None:
        self.fd = _nonblocking_stderr()
        self.pending = bytearray()
        self.dropped = 0
        self.lock = threading.Lock()

    def write(self, line: bytes) -> None:
        if sys.stderr is not None and sys.stderr is not sys.__stderr__:
            sys.stderr.write(line.decode())  # redirected in-process (click's test runner)
            return
        with self.lock:
            if self.fd is None:
                return
            self._flush()
            if len(self.pending) + len(line) > self.HELD_BYTES:
                self.dropped += 1
                return
            if self.dropped and not self.pending:
                self.pending += json.dumps({"event": "log.lines_dropped", "lines": self.dropped,
                                            "reason": "the log's reader fell behind"}).encode()
                self.pending += b"\n"
                self.dropped = 0
            self.pending += line
            self._flush()

    def _flush(self) -> None:
        while self.pending:
            # Whole lines, at most PIPE_BUF bytes at a time: a pipe takes such a write whole or
            # not at all, so a reader never sees a torn line (unless one line is longer).
            end = self.pending.rfind(b"\n", 0, select.PIPE_BUF) + 1 or len(self.pending)
            try:
                written = os.write(self.fd, self.pending[:end])
            except BlockingIOError:
                return
            except OSError:  # EPIPE, EBADF: nobody will read these
                self.pending.clear()
                return
            del self.pending[:written]

    def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for held lines to be written (before exiting or re-executing)."""
        ends = time.monotonic() + seconds
        with self.lock:
            while self.fd is not None and self.pending and time.monotonic() < ends:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                poller.poll(max(1, int((ends - time.monotonic()) * 1000)))
                self._flush()


def _nonblocking_stderr() -> int | None:
    """fd 2, or, when it is a pipe, a non-blocking open file description of that pipe: setting
    O_NONBLOCK on fd 2 itself would change the workload's stderr too, which shares it."""
    try:
        mode = os.fstat(2).st_mode
    except OSError:
        return None  # started without stderr
    if stat.S_ISFIFO(mode):
        try:
            return os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass
    return 2


_the_sink: _Sink | None = None


def _sink() -> _Sink:
    global _the_sink
    if _the_sink is None:
        _the_sink = _Sink()
    return _the_sink


def line(text: str) -> None:
    """A line for people on stderr (the one-line error at exit), in order with the log's."""
    _sink().write(text.encode(errors="backslashreplace") + b"\n")


def drain(seconds: float = 1.0) -> None:
    """Give held log lines up to `seconds` to reach the log, as crikpy exits or re-executes."""
    if _the_sink is not None:
        _the_sink.drain(seconds)


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
