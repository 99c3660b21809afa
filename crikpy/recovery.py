"""Which checkpoint a start restores, and what a failed restore means.

The latest pointer names the checkpoint to restore. First, is it of this version? A checkpoint
taken from another version of the program (crikpy.container.identity: image, mapped files,
command, environment, pod revision) is a rollout: the start is cold, the pointer is cleared and
the checkpoint kept (--on-new-version restore restores it anyway). A failure is judged by whose
fault it is:
- the store's (StoreError: unreachable, refused): crikpy exits with that error's code and the
  checkpoint stays as it is; the kubelet restarts the pod;
- this node's (NodeFault: no privileges, disk full, a PID or port taken, a lower limit): crikpy
  exits 178 with the checkpoint kept, for a node that can restore it; each such start counts,
  so a checkpoint that no node restores does not loop forever;
- a later format (NewerCheckpoint): kept untouched for a crikpy that reads it; exit;
- a pointer naming a checkpoint that is not there, or one already quarantined: skipped;
- the checkpoint's own (CorruptCheckpoint: integrity, format): quarantined at once;
- anything else (CRIU failed without naming the node, an unexpected error): counted in the
  store; crikpy exits so that the pod tries again, and after `--restore-attempts` failures the
  checkpoint is quarantined.
An attempt is counted before it begins, so a crikpy killed mid-restore (out of memory, say)
counts too: no start loops forever, whatever the cause. After a quarantine the previous committed checkpoint is
tried; when none is left, the start is cold (or fails, with --on-restore-failure=fail).
A SIGTERM during the download stops the restore with nothing lost (Interrupted).
Restored, RestoreFailed and Quarantined are also Events about the pod (crikpy.podevents).
"""

from __future__ import annotations

import dataclasses

from crikpy import budget, log
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.container.identity import Identity
from crikpy.container.identity import parse as parse_identity
from crikpy.deadline import ABORT, Deadline
from crikpy.errors import (CheckpointNotFound, CorruptCheckpoint, CrikpyError, CriuError,
                           Interrupted, NewerCheckpoint, NodeFault, RestoreFailed, StoreError)
from crikpy.migrate import Migrator
from crikpy.podevents import PodEvents
from crikpy.settings import Settings

_log = log.get()
# Not about restoring it at all: the attempt is not counted against it.
_NOT_ITS_FAULT = (StoreError, NewerCheckpoint, Interrupted)


@dataclasses.dataclass(frozen=True)
class Restored:
    """The workload runs again from checkpoint `ckpt_id`, as the process tree rooted at `pid`."""

    pid: int
    command: list[str]
    ckpt_id: str


@dataclasses.dataclass(frozen=True)
class Cold:
    """Nothing to restore: the workload starts afresh."""


Start = Restored | Cold


@dataclasses.dataclass(frozen=True)
class _GivenUp:
    why: str  # "is corrupt and quarantined", ...


class _NewVersion(Exception):
    def __init__(self, ckpt_id: str, changed: list[str]) -> None:
        super().__init__(ckpt_id)
        self.ckpt_id, self.changed = ckpt_id, changed


def _step() -> Deadline:
    """Each store step of a start: bounded, and stopped by a SIGTERM (Interrupted) with nothing
    lost, however long another pod holds the store's lock."""
    return Deadline.after(budget.STORE_CALL_SECONDS, on_sigterm=ABORT)


def restore_latest(settings: Settings, repo: CheckpointRepository, migrator: Migrator,
                   events: PodEvents | None = None, program: Identity | None = None) -> Start:
    """Restore what the latest pointer names, or say the start is cold. `program`: this start's
    identity, to tell a new version from a move."""
    events = events or PodEvents.off()
    try:
        ckpt_id = repo.latest_id(_step())
    except CorruptCheckpoint as e:
        repo.clear_latest(str(e), _step())
        return _nothing_to_restore(settings, f"{e}; it is cleared")
    if ckpt_id is None:
        _log.info("restore.skipped", reason="the latest pointer names no checkpoint (none was "
                                            "committed, or the workload exited or was stopped "
                                            "without one)")
        return Cold()
    while ckpt_id is not None:
        try:
            attempt = _attempt(settings, repo, migrator, ckpt_id, events, program)
        except _NewVersion as new:
            _log.warning("restore.new_version", id=new.ckpt_id, changed=new.changed,
                         action="cold start; the checkpoint is kept, and no longer latest "
                                "(--on-new-version restore would restore it)")
            events.new_version(new.ckpt_id, new.changed)
            repo.clear_latest(f"new version: {'; '.join(new.changed)[:300]}", _step())
            return Cold()
        if isinstance(attempt, Restored):
            return attempt
        given_up, ckpt_id = ckpt_id, repo.previous_committed(ckpt_id, _step())
        if ckpt_id is not None:
            _log.warning("restore.fallback", id=ckpt_id, instead_of=given_up, reason=attempt.why,
                         detail="the previous committed checkpoint; the workload goes back "
                                "further in time")
            repo.point_at(ckpt_id, f"fallback: {given_up}: {attempt.why}", _step())
    repo.clear_latest(f"{given_up}: {attempt.why}", _step())
    return _nothing_to_restore(settings, f"checkpoint {given_up} {attempt.why} (see `crikpy "
                                         "checkpoints list`), and no earlier one is left")


def _attempt(settings: Settings, repo: CheckpointRepository, migrator: Migrator,
             ckpt_id: str, events: PodEvents, program: Identity | None,
             ) -> Restored | _GivenUp:
    """Restore one checkpoint, or give it up; raises to exit, keeping it."""
    try:
        manifest = repo.manifest(ckpt_id, _step())
    except CheckpointNotFound:
        return _GivenUp("is not in the store")
    except CorruptCheckpoint as e:
        repo.quarantine(ckpt_id, str(e), deadline=_step())
        events.quarantined(ckpt_id, str(e))
        return _GivenUp("is corrupt and quarantined")
    if repo.quarantined(ckpt_id, _step()):  # set aside before, though the pointer named it
        return _GivenUp("is quarantined")
    if program is not None and manifest.program is not None \
            and settings.on_new_version == "cold-start":
        changed = program.changes_from(parse_identity(manifest.program))
        if changed:
            raise _NewVersion(ckpt_id, changed)
    failures = repo.attempts(ckpt_id, _step())["failures"]
    attempt = failures + 1
    counted = False

    def count() -> None:
        # Just before CRIU runs, with the checkpoint downloaded and verified: a store or node
        # fault before that is not the checkpoint's, and a CRIU that kills crikpy is bounded.
        nonlocal counted
        repo.record_attempt(ckpt_id, attempt, "restore begun", _step())
        counted = True

    _log.info("restore.started", id=ckpt_id, attempt=attempt, of=settings.restore_attempts)
    watch = log.Stopwatch()
    try:
        pid = migrator.restore(manifest, before_criu=count)
    except _NOT_ITS_FAULT as e:
        if counted:
            _uncount(repo, ckpt_id, failures, e)
        _log.error("restore.failed", id=ckpt_id, error=str(e), fault="store",
                   action="exiting; the checkpoint is kept for the next start")
        events.restore_failed(ckpt_id, f"{e}; the checkpoint is kept for the next start")
        raise
    except CorruptCheckpoint as e:
        repo.quarantine(ckpt_id, str(e), e.criu_log, _step())
        events.quarantined(ckpt_id, str(e))
        return _GivenUp("is corrupt and quarantined")
    except Exception as e:  # noqa: BLE001  (any other failure counts against the checkpoint)
        node = isinstance(e, NodeFault)
        reason = str(e) if isinstance(e, CrikpyError) else f"{type(e).__name__}: {e}"
        if attempt >= settings.restore_attempts:
            where = ", each time on a node that could not restore it" if node else ""
            why = f"{reason} (restore failed {attempt} times{where})"
            repo.quarantine(ckpt_id, why, e.criu_log if isinstance(e, CrikpyError) else None,
                            _step())
            events.quarantined(ckpt_id, why)
            return _GivenUp(f"failed to restore {attempt} times and is quarantined")
        repo.record_attempt(ckpt_id, attempt, reason, _step())
        _log.error("restore.failed", id=ckpt_id, error=reason, attempt=attempt,
                   of=settings.restore_attempts, exc_info=not isinstance(e, CrikpyError),
                   fault="node" if node else "checkpoint or CRIU",
                   action="exiting; the next start tries again")
        if node:
            events.restore_failed(ckpt_id, f"{reason}; the checkpoint is kept for the next start "
                                           f"(attempt {attempt} of {settings.restore_attempts})")
            raise
        events.restore_failed(ckpt_id, f"{reason} (attempt {attempt} of "
                                       f"{settings.restore_attempts}; the pod tries again)")
        raise CriuError(f"restore of checkpoint {ckpt_id} failed (attempt {attempt} of "
                        f"{settings.restore_attempts}): {reason}; the pod restarts and tries "
                        "again, and quarantines it after the last attempt") from e
    events.restored(manifest, watch.elapsed())
    _reset_attempts(repo, ckpt_id)
    return Restored(pid, manifest.command, ckpt_id)


def _reset_attempts(repo: CheckpointRepository, ckpt_id: str) -> None:
    """A good restore sets the count back to none: deleted, or rewritten where the store
    refuses the delete, so that restores that worked never bring a quarantine nearer. Bounded,
    since the workload already runs and a SIGTERM may be on its way."""
    bound = Deadline.after(budget.RESET_ATTEMPTS_SECONDS)
    try:
        repo.forget_attempts(ckpt_id, bound)
        return
    except StoreError as e:
        error = e
    try:
        repo.record_attempt(ckpt_id, 0, f"restored; the record could not be deleted: {error}",
                            bound)
    except StoreError as e:
        _log.warning("restore.attempts_not_reset", id=ckpt_id, error=str(e),
                     consequence="this checkpoint's next failed restore may quarantine it early")


def _uncount(repo: CheckpointRepository, ckpt_id: str, failures: int, error: Exception) -> None:
    try:
        repo.record_attempt(ckpt_id, failures, f"not counted: {error}",
                            Deadline.after(budget.RESET_ATTEMPTS_SECONDS))
    except StoreError:
        pass  # the store is what failed; the count stays one too high: a quarantine comes sooner


def _nothing_to_restore(settings: Settings, why: str) -> Cold:
    if settings.on_restore_failure == "fail":
        raise RestoreFailed(f"nothing could be restored: {why}; fix the cause, or set "
                            "--on-restore-failure=cold-start to start cold instead")
    _log.warning("restore.skipped", reason=why, action="cold start")
    return Cold()
