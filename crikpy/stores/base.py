"""The Store protocol: where checkpoint bytes live, independent of what a checkpoint is.

A store maps `/`-separated keys to byte objects. Large objects move as files, hashed while they
stream; small ones (manifests, the latest pointer) move as bytes and can be written conditionally,
which is what makes a commit atomic. `checkpoint/commit.py` builds everything else on these calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Protocol

from crikpy.errors import StoreError

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


class Store(Protocol):
    url: str

    def put_file(self, key: str, path: str, *, progress: Progress | None = None,
                 deadline: "Deadline | None" = None) -> Digest:
        """Upload a local file; the digest is computed from the bytes as they are sent.

        Transient failures are retried until `deadline` (DeadlineExceeded after it).
        """

    def get_file(self, key: str, path: str, *, progress: Progress | None = None) -> Digest:
        """Download to a local file, hashing as the bytes arrive; MissingObject if absent."""

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_absent: bool = False, deadline: "Deadline | None" = None) -> str:
        """Write a small object, optionally only if its tag is `if_match` or it is absent.

        Raises PreconditionFailed when the condition does not hold. Returns the new tag.
        """

    def get_bytes(self, key: str) -> Versioned | None:
        """A small object with its tag, or None when absent."""

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix` (recursively), in no particular order."""

    def delete(self, key: str) -> None:
        """Remove one key; absent keys are fine."""

    def describe_credentials(self) -> str:
        """Where the credentials came from (never the secret), for `crikpy check`."""


def copy_hashing(src: BinaryIO, dst: BinaryIO, progress: Progress | None = None) -> Digest:
    """Copy a stream in bounded chunks, hashing on the way: one pass, never whole in memory."""
    sha = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        sha.update(chunk)
        dst.write(chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return Digest(size, sha.hexdigest())
