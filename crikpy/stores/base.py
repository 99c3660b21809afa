"""The Store protocol: where checkpoint bytes live, independent of what a checkpoint is.

A store maps `/`-separated keys to byte objects. Large objects move as files, hashed while they
stream; small ones (manifests, the latest pointer) move as bytes and can be written conditionally,
which is what makes a commit atomic. `checkpoint/commit.py` builds everything else on these calls.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import threading
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Protocol

from crikpy.errors import CrikpyError, NodeFault, StoreError

if TYPE_CHECKING:
    from crikpy.deadline import Deadline

CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Versioned:
    """A small object's bytes and the tag a conditional write must name to replace it."""

    data: bytes
    etag: str


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class MissingObject(StoreError):
    """A key that the store does not hold."""


Progress = Callable[[int], None]  # called with each chunk's size as bytes move


class Source(Protocol):
    """What an upload reads: a local file, its sealed bytes made as they are read, or a stream
    being produced meanwhile (size None: the store must not need it upfront)."""

    path: str
    size: int | None

    def open(self) -> BinaryIO: ...


class Sink(Protocol):
    """Where a download writes: a local file, or one that opens sealed bytes as they come."""

    path: str

    def open(self) -> BinaryIO: ...


class LocalFile:
    """A plain local file, as a Source and as a Sink."""

    def __init__(self, path: str) -> None:
        self.path = str(path)

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    def open(self, mode: str = "rb") -> BinaryIO:
        return open(self.path, mode)


class _LocalSink(LocalFile):
    def open(self, mode: str = "wb") -> BinaryIO:
        return open(self.path, mode, buffering=0)  # large chunks; a full disk shows at once


class Stream:
    """A Source that another thread writes into while the store uploads it, in bounded memory.

    `write` blocks while `limit` bytes wait (so the producer, CRIU, waits for the store);
    `read(n)` blocks until n bytes or the end, as a file's would, taking bytes as they come.
    `fail()` makes the reader raise, so the upload stops and cleans up.
    """

    size = None

    def __init__(self, path: str, limit: int = 2 * CHUNK) -> None:
        self.path, self._limit = path, limit
        self._chunks: list[bytes] = []
        self._held = 0
        self._ended = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._held < self._limit or self._error is not None)
            if self._error is not None:
                raise self._error
            self._chunks.append(bytes(data))
            self._held += len(data)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def open(self) -> "Stream":
        return self

    def read(self, n: int = -1) -> bytes:
        out = []
        self._take(n, out.append)
        return b"".join(out)

    def readinto(self, buffer) -> int:
        """Fill `buffer` as far as the stream goes: an upload's reused part buffer."""
        view, got = memoryview(buffer), 0

        def put(chunk: bytes) -> None:
            nonlocal got
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        self._take(len(view), put)
        return got

    def _take(self, n: int, put: Callable[[bytes], None]) -> None:
        """Hand up to n bytes (all, when n < 0) to `put`, waiting for them or the end."""
        got = 0
        with self._cond:
            while n < 0 or got < n:
                # Take bytes as they come: a read larger than the bound (an S3 part) must not
                # wait for the writer, which waits for room.
                self._cond.wait_for(lambda: self._error is not None or self._ended
                                    or self._held > 0)
                if self._error is not None:
                    raise self._error
                if not self._held:
                    break  # the end
                while self._chunks and (n < 0 or got < n):
                    chunk = self._chunks.pop(0)
                    if n >= 0 and len(chunk) > n - got:
                        self._chunks.insert(0, chunk[n - got:])
                        chunk = chunk[:n - got]
                    put(chunk)
                    got += len(chunk)
                    self._held -= len(chunk)
                self._cond.notify_all()

    def close(self) -> None:
        pass

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        pass


def as_source(src: "str | Source") -> Source:
    return LocalFile(src) if isinstance(src, (str, os.PathLike)) else src


def as_sink(dst: "str | Sink") -> Sink:
    return _LocalSink(dst) if isinstance(dst, (str, os.PathLike)) else dst


class Store(Protocol):
    url: str

    def put_file(self, key: str, path: "str | Source", *, progress: Progress | None = None,
                 deadline: "Deadline | None" = None) -> Digest:
        """Upload a local file (or a Source); the digest is of the bytes as they are sent.

        Transient failures are retried until `deadline` (DeadlineExceeded after it).
        """

    def get_file(self, key: str, path: "str | Sink", *, progress: Progress | None = None,
                 deadline: "Deadline | None" = None) -> Digest:
        """Download to a local file (or a Sink), hashing the stored bytes as they arrive;
        MissingObject if absent.

        `deadline` is checked between chunks (a SIGTERM may interrupt a restore's download).
        A local disk that is full raises NodeFault: the checkpoint is not to blame.
        """

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_absent: bool = False, deadline: "Deadline | None" = None) -> str:
        """Write a small object, optionally only if its tag is `if_match` or it is absent.

        Raises PreconditionFailed when the condition does not hold. Returns the new tag.
        """

    def get_bytes(self, key: str, *, deadline: "Deadline | None" = None) -> Versioned | None:
        """A small object with its tag, or None when absent."""

    def list(self, prefix: str, *, deadline: "Deadline | None" = None) -> Iterator[str]:
        """Every key under `prefix` (recursively), in no particular order."""

    def delete(self, key: str, *, deadline: "Deadline | None" = None) -> None:
        """Remove one key; absent keys are fine."""

    def sweep(self, prefix: str, *, older_than: float, deadline: "Deadline | None" = None) -> int:
        """Remove what writers killed mid-write left under `prefix` (temporary files, abandoned
        multipart uploads) once older than `older_than` seconds; returns how many."""

    def describe_credentials(self) -> str:
        """Where the credentials came from (never the secret), for `crikpy check`."""


def copy_hashing(src: BinaryIO, dst: BinaryIO, progress: Progress | None = None,
                 deadline: "Deadline | None" = None, what: str = "a copy") -> Digest:
    """Copy a stream in bounded chunks, hashing on the way: one pass, never whole in memory.

    The deadline is checked before every chunk, so a slow disk cannot outlive it.
    """
    sha = hashlib.sha256()
    size = 0
    while True:
        if deadline is not None:
            deadline.check(what)
        chunk = src.read(CHUNK)
        if not chunk:
            break
        sha.update(chunk)
        dst.write(chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return Digest(size, sha.hexdigest())


def local_write_error(e: OSError, path: str) -> CrikpyError:
    """What a failed write into the local work dir means: a full disk is this node's fault."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NodeFault(f"no space left in {os.path.dirname(path) or path} for a checkpoint's "
                         "download; give the work dir more room (--work-dir, or a larger "
                         "emptyDir sizeLimit)")
    return NodeFault(f"cannot write {path} in the work dir: {e.strerror}; check --work-dir")
