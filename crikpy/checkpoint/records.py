"""The records beside a checkpoint: restore attempts, quarantine and release.

Small JSON objects next to a checkpoint's files (layout.py), written without the pointer's
fencing: each is about one checkpoint, whoever writes it. Attempts bound a restart loop (a start
counts one before CRIU runs); a quarantine sets a checkpoint aside for good, with the reason and
CRIU's log; a release undoes it. Part of CheckpointRepository (repository.py).
"""

from __future__ import annotations

import enum
import json

from crikpy.budget import MAX_RESTORE_ATTEMPTS
from crikpy.checkpoint.layout import ATTEMPTS, QUARANTINE, RESTORE_LOG
from crikpy.checkpoint.manifest import timestamp
from crikpy.deadline import Deadline


class Released(enum.StrEnum):
    """What `release` did."""

    LATEST = "latest"
    NOT_LATEST = "not latest"
    NOT_QUARANTINED = "not quarantined"


class Records:
    def _record(self, ckpt_id: str, name: str, deadline: Deadline | None = None) -> dict | None:
        """A small JSON record beside a checkpoint; {} when absent, None when unreadable."""
        obj = self.store.get_bytes(self.layout.record(ckpt_id, name), deadline=deadline)
        if obj is None:
            return {}
        try:
            record = json.loads(obj.data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def attempts(self, ckpt_id: str, deadline: Deadline | None = None) -> dict:
        record = self._record(ckpt_id, "attempts.json", deadline) or {}
        failures = record.get("failures")
        counted = isinstance(failures, int) and not isinstance(failures, bool) and failures >= 0
        # Capped: the record is not sealed, and no setting counts beyond it.
        return {"failures": min(failures, MAX_RESTORE_ATTEMPTS) if counted else 0,
                "last": str(record.get("last", ""))}

    def record_attempt(self, ckpt_id: str, failures: int, last: str,
                       deadline: Deadline | None = None) -> None:
        body = json.dumps({"failures": failures, "last": last, "at": timestamp()}).encode()
        self.store.put_bytes(self.layout.record(ckpt_id, ATTEMPTS), body, deadline=deadline)

    def forget_attempts(self, ckpt_id: str, deadline: Deadline | None = None) -> None:
        self.store.delete(self.layout.record(ckpt_id, ATTEMPTS), deadline=deadline)

    def quarantined(self, ckpt_id: str, deadline: Deadline | None = None) -> bool:
        return self.store.get_bytes(self.layout.record(ckpt_id, QUARANTINE),
                                    deadline=deadline) is not None

    def quarantine(self, ckpt_id: str, reason: str, criu_log: bytes | None = None,
                   deadline: Deadline | None = None) -> None:
        """Set a checkpoint aside so no start tries it again; the pointer stops naming it."""
        if criu_log:
            self.store.put_bytes(self.layout.record(ckpt_id, RESTORE_LOG), criu_log,
                                 deadline=deadline)
        self.store.put_bytes(self.layout.record(ckpt_id, QUARANTINE),
                             json.dumps({"reason": reason, "at": timestamp()}).encode(),
                             deadline=deadline)
        self.clear_latest(f"checkpoint {ckpt_id} quarantined", deadline, naming=ckpt_id)
        self._log.warning("checkpoint.quarantined", id=ckpt_id, reason=reason)

    def release(self, ckpt_id: str) -> Released:
        """Take a checkpoint out of quarantine and reset its failed attempts; a released one
        becomes latest unless a newer one is. One that was not quarantined only has its
        attempts reset: the pointer may have left it on purpose (the workload ended after it).

        """
        self.manifest(ckpt_id)  # it must exist and read as a committed checkpoint
        latest = self.latest_id()  # before any change: a garbled pointer changes nothing
        was_quarantined = self.quarantined(ckpt_id)
        self.store.delete(self.layout.record(ckpt_id, ATTEMPTS))
        if not was_quarantined:
            return Released.NOT_QUARANTINED
        self.store.delete(self.layout.record(ckpt_id, QUARANTINE))
        if latest is None or latest < ckpt_id:
            self.point_at(ckpt_id, reason=f"checkpoint {ckpt_id} released from quarantine")
            return Released.LATEST
        return Released.LATEST if latest == ckpt_id else Released.NOT_LATEST
