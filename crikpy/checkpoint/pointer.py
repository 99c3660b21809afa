"""The latest pointer: which checkpoint a start restores, who wrote it, and how it moves.

`<workload>/latest.json` is `{"id": ..., "at": ..., "writer": ...}`. It moves only by a
conditional write against the version its writer last saw, so of two pods of one name (a
rollout, a rescheduled StatefulSet pod) the second to write loses the race and changes nothing.
`writer` names the pod start that wrote it (an Owner), so that "is this checkpoint mine to
clear" is decided from the store, whatever the process remembers: a pod clears the pointer only
while it names what that pod itself wrote, or what it found there when it started, unchanged.
docs/format.md states the rules.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
import socket

from crikpy import log
from crikpy.checkpoint.manifest import is_id
from crikpy.deadline import Deadline
from crikpy.errors import CorruptCheckpoint, RaceLost
from crikpy.stores import PreconditionFailed, Store

ABSENT = ""  # the version of a pointer that does not exist yet
GARBLED = "<garbled>"  # what a pointer that cannot be read names, until it is rewritten


def new_owner() -> str:
    """Who a pod start is, in the pointers it writes: its host and a random tag (a restarted
    container on the same host is another start)."""
    return f"{socket.gethostname()[:63]}/{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True)
class Pointer:
    """The pointer as read at one moment: what it names, its version, who wrote it."""

    id: str | None
    version: str
    writer: str | None = None
    problem: str | None = None  # set when it could not be read: id is then GARBLED

    @classmethod
    def from_json(cls, data: dict) -> "Pointer":
        return cls(**data)


class Cleared(enum.Enum):
    """What clearing the pointer did."""

    CLEARED = "cleared"
    ALREADY_CLEAR = "already clear"  # it named no checkpoint
    NOT_OURS = "not ours"  # it names what another pod wrote since this one looked
    RACE_LOST = "race lost"  # another pod moved it between the read and the write


def read(store: Store, key: str, deadline: Deadline | None) -> Pointer:
    obj = store.get_bytes(key, deadline=deadline)
    if obj is None:
        return Pointer(None, ABSENT)
    try:
        body = json.loads(obj.data)
        ckpt_id, writer = body["id"], body.get("writer")
        if ckpt_id is not None and not (isinstance(ckpt_id, str) and is_id(ckpt_id)):
            return Pointer(GARBLED, obj.etag, problem=f"latest pointer names a bad id {ckpt_id!r}")
        return Pointer(ckpt_id, obj.etag, writer if isinstance(writer, str) else None)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return Pointer(GARBLED, obj.etag,
                       problem=f"latest pointer {key} in {store.url} is garbled")


def write(store: Store, key: str, seen: Pointer, ckpt_id: str | None, owner: str,
          at: str, deadline: Deadline | None, **context) -> Pointer:
    """Move the pointer from `seen` to `ckpt_id`; RaceLost when it moved meanwhile.

    A write whose answer was lost may have landed (the retry then meets the write itself): what
    the pointer names afterwards decides, not the error.
    """
    body = json.dumps({"id": ckpt_id, "at": at, "writer": owner, **context}).encode()
    try:
        version = store.put_bytes(key, body, if_match=seen.version or None,
                                  if_absent=seen.version == ABSENT, deadline=deadline)
        return Pointer(ckpt_id, version, owner)
    except PreconditionFailed as e:
        now = read(store, key, deadline)
        if now.id == ckpt_id and now.writer == owner:
            log.get().info("latest.confirmed", id=ckpt_id, detail="the write's answer was lost; "
                           "read back, the pointer names what was written")
            return now
        raise RaceLost(f"another pod of the same name moved the latest pointer first (it names "
                       f"{now.id or 'no checkpoint'} now, written by {now.writer or 'unknown'})"
                       f"; this write did not land ({e})") from e


def is_ours(now: Pointer, owner: str, known: Pointer | None) -> bool:
    """Whether the pointer as it is `now` is this pod's to clear: this pod wrote it, or it is
    unchanged since this pod knew it (as it found it at its start, or as it last wrote it)."""
    return now.writer == owner or (known is not None and now.version == known.version)


def raise_if_garbled(pointer: Pointer) -> str | None:
    """The id the pointer names; CorruptCheckpoint when it cannot be read."""
    if pointer.problem:
        raise CorruptCheckpoint(pointer.problem)
    return pointer.id
