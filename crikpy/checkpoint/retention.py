"""Retention: listing a workload's checkpoints, keeping the newest, sweeping leftovers.

Deletions never race a commit into a hole: a checkpoint's manifest goes first (what remains is
"incomplete", never half restorable), incomplete ones are kept while their writer may still be
alive (`stale_after`), and a commit checks its files are all there before its manifest. What a
reader sees while another pod prunes: a checkpoint whole, incomplete, or gone. Housekeeping
after a commit is bounded and best effort. Part of CheckpointRepository (repository.py).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable

from crikpy.checkpoint.layout import MANIFEST, QUARANTINE
from crikpy.checkpoint.manifest import id_age_seconds, is_id
from crikpy.deadline import Deadline
from crikpy.errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, NewerCheckpoint


class Status(enum.StrEnum):
    COMMITTED = "committed"
    QUARANTINED = "quarantined"
    INCOMPLETE = "incomplete"  # no manifest: cut off, or still being written
    CORRUPT = "corrupt"
    NEWER = "newer-format"  # written by a newer crikpy: never touched by this one
    ENCRYPTED = "encrypted"  # sealed with a key this process does not hold


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    id: str
    status: Status
    latest: bool
    created_at: str | None = None
    total_bytes: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Retention:
    def list(self, deadline: Deadline | None = None) -> list[CheckpointInfo]:
        keys_by_id: dict[str, set[str]] = {}
        base = self.layout.checkpoints
        for key in self.store.list(base, deadline=deadline):
            ckpt_id, _, rest = key[len(base):].partition("/")
            if is_id(ckpt_id):  # anything else there is not crikpy's
                keys_by_id.setdefault(ckpt_id, set()).add(rest)
        try:
            latest = self.latest_id(deadline)
        except CorruptCheckpoint as e:  # the checkpoints are still worth listing
            self._log.warning("latest.garbled", problem=str(e),
                              consequence="the next start clears it and starts cold")
            latest = None
        infos = []
        for ckpt_id in sorted(keys_by_id):
            infos.append(self._info(ckpt_id, keys_by_id[ckpt_id], latest, deadline))
        return infos

    def _info(self, ckpt_id: str, keys: set[str], latest: str | None,
              deadline: Deadline | None = None) -> CheckpointInfo:
        is_latest = ckpt_id == latest
        if MANIFEST not in keys:
            return CheckpointInfo(ckpt_id, Status.INCOMPLETE, is_latest)
        created = size = problem = None
        try:
            m = self.manifest(ckpt_id, deadline)
            created, size = m.created_at, m.total_bytes
        except CorruptCheckpoint as e:
            status, problem = Status.CORRUPT, str(e)
        except NewerCheckpoint as e:
            return CheckpointInfo(ckpt_id, Status.NEWER, is_latest, reason=str(e))
        except ConfigError as e:
            return CheckpointInfo(ckpt_id, Status.ENCRYPTED, is_latest, reason=str(e))
        if QUARANTINE in keys:  # set aside, whatever else is wrong with it
            record = self._record(ckpt_id, QUARANTINE, deadline)
            reason = record.get("reason") if record is not None else "unreadable quarantine record"
            return CheckpointInfo(ckpt_id, Status.QUARANTINED, is_latest, created, size, str(reason))
        if problem:
            return CheckpointInfo(ckpt_id, status, is_latest, reason=problem)
        return CheckpointInfo(ckpt_id, Status.COMMITTED, is_latest, created, size)

    def previous_committed(self, before: str, deadline: Deadline | None = None) -> str | None:
        """The newest committed (not quarantined) checkpoint older than `before`.

        Raises ConfigError when that one is sealed under a key this pod does not hold: a start
        must not pass over a checkpoint it merely cannot read.
        """
        older = [i for i in self.list(deadline)
                 if i.status in (Status.COMMITTED, Status.ENCRYPTED) and i.id < before]
        if older and older[-1].status == Status.ENCRYPTED:
            raise ConfigError(older[-1].reason)
        return older[-1].id if older else None

    def housekeeping(self, just_committed: str, deadline: Deadline) -> None:
        """Retention and sweeping after a commit, once nothing waits for it (the tree runs on,
        or is gone): bounded, and never a failure of the commit."""
        try:
            self.prune(just_committed, deadline)
            self.store.sweep(f"{self.prefix}/", older_than=self.stale_after, deadline=deadline)
        except Exception as e:  # noqa: BLE001  (committed is committed, whatever fails here)
            self._log.warning("checkpoint.housekeeping_failed", id=just_committed,
                              error=f"{type(e).__name__}: {e}",
                              detail="the checkpoint is committed; leftovers are retried at the "
                                     "next commit")

    def prune(self, just_committed: str, deadline: Deadline | None = None) -> None:
        """Keep the newest `keep` committed and `keep` quarantined checkpoints (and the latest).

        Incomplete ones go too, but only once their writer must be dead (`stale_after`): a racing
        pod of the same name may still be uploading a newer one.
        """
        infos = self.list(deadline)
        doomed: set[str] = set()
        for status in (Status.COMMITTED, Status.QUARANTINED):
            same = [i for i in infos if i.status == status]
            doomed |= {i.id for i in same[: max(0, len(same) - self.keep)] if not i.latest}
        doomed |= {i.id for i in infos if i.status == Status.INCOMPLETE and i.id != just_committed
                   and not i.latest and id_age_seconds(i.id) > self.stale_after}
        for ckpt_id in sorted(doomed):
            if deadline is not None:
                deadline.check("retention")
            self._delete_keys(self.store.list(self.layout.checkpoint(ckpt_id) + "/", deadline=deadline),
                              deadline)
            self._log.info("checkpoint.pruned", id=ckpt_id)

    def delete(self, ckpt_id: str) -> None:
        keys = list(self.store.list(self.layout.checkpoint(ckpt_id) + "/"))
        if not keys:
            raise CheckpointNotFound(
                f"checkpoint {ckpt_id} is not in {self.store.url} under {self.prefix}; "
                "see `crikpy checkpoints list`"
            )
        self.clear_latest(f"checkpoint {ckpt_id} deleted", naming=ckpt_id)
        self._delete_keys(keys)

    def _delete_keys(self, keys: Iterable[str], deadline: Deadline | None = None) -> None:
        # Manifest first: a checkpoint whose deletion is cut off is "incomplete", never half
        # restorable.
        for key in sorted(keys, key=lambda k: not k.endswith(f"/{MANIFEST}")):
            self.store.delete(key, deadline=deadline)
