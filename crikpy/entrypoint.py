"""What `crikpy run` does, start to finish.

1. Block signals (the supervisor waits for them) and become a subreaper when not PID 1.
2. If the store's latest pointer names a checkpoint, restore it; if that fails, quarantine it and
   cold-start the command (or stop, with --on-restore-failure=fail).
3. Otherwise start the command, above the PID floor.
4. Supervise; crikpy.triggers says when to checkpoint (SIGTERM, notices, periodic).
5. When the workload ends on its own, or is stopped without a checkpoint being wanted, its last
   checkpoint is stale: clear the latest pointer so the next start is cold.
"""

from __future__ import annotations

import os
from typing import Sequence

from crikpy import __version__, log, procs, supervisor
from crikpy.checkpoint.commit import CheckpointRepository
from crikpy.errors import (USAGE_EXIT_CODE, CorruptCheckpoint, CrikpyError, CriuUnavailable,
                           RestoreFailed, StoreError)
from crikpy.migrate import Migrator
from crikpy.settings import Settings
from crikpy.stores import open_store
from crikpy.triggers import Triggers

_log = log.get()


class NothingToRun(CrikpyError):
    exit_code = USAGE_EXIT_CODE


def run(settings: Settings, command: Sequence[str]) -> int:
    command = list(command)
    supervisor.block_signals()
    if os.getpid() != 1:
        procs.set_child_subreaper()
    repo = CheckpointRepository(open_store(settings.store, settings), settings.workload_key,
                                settings.keep_checkpoints)
    migrator = Migrator(settings, repo)
    _log.info("crikpy.started", version=__version__, store=settings.store,
              workload=settings.workload_key, command=command or None)
    pid, restored_command = _restore_latest(settings, repo, migrator)
    if pid is not None:
        if command and command != restored_command:
            _log.warning("restore.command_differs", given=command, restored=restored_command)
        command = restored_command
    else:
        if not command:
            raise NothingToRun("nothing to run: no checkpoint to restore and no command given; "
                               "use `crikpy run -- COMMAND [ARGS...]`")
        _raise_pid_floor(settings)
        try:
            pid = supervisor.spawn(command)
        except OSError as e:
            _log.error("workload.not_started", command=command, error=e.strerror)
            return 127 if isinstance(e, FileNotFoundError) else 126
        _log.info("workload.started", pid=pid, command=command)

    triggers = Triggers(settings, migrator, command)
    outcome = supervisor.supervise(pid, triggers.on_sigterm,
                                   triggers.on_tick if triggers.wants_ticks else None)
    triggers.stop()
    if outcome.how == supervisor.EXITED or triggers.declined:
        why = "workload exited" if outcome.how == supervisor.EXITED else "stopped without checkpoint"
        repo.clear_latest(reason=f"{why}, code {outcome.exit_code}")
        _log.info("latest.cleared", reason=why, exit_code=outcome.exit_code)
    return outcome.exit_code


def _restore_latest(settings: Settings, repo: CheckpointRepository,
                    migrator: Migrator) -> tuple[int | None, list[str]]:
    """Restore what the latest pointer names: (root PID, its command), or (None, []) to cold-start."""
    try:
        ckpt_id = repo.latest_id()
    except CorruptCheckpoint as e:
        repo.clear_latest(reason=str(e))
        return _after_failure(settings, "pointer", e)
    if ckpt_id is None:
        _log.info("restore.skipped", reason="no committed checkpoint")
        return None, []
    _log.info("restore.started", id=ckpt_id)
    try:
        manifest = repo.manifest(ckpt_id)
        pid = migrator.restore(manifest)
    except CrikpyError as e:
        if isinstance(e, (StoreError, CriuUnavailable)):
            raise  # this machine failed, not the checkpoint: keep it and stop, losing nothing
        repo.quarantine(ckpt_id, str(e), getattr(e, "restore_log", None))
        return _after_failure(settings, ckpt_id, e)
    _raise_pid_floor(settings)
    return pid, manifest.command


def _after_failure(settings: Settings, what: str, error: CrikpyError):
    if settings.on_restore_failure == "fail":
        raise RestoreFailed(f"restore of {what} failed ({error}); it is quarantined; "
                            "fix the cause or set --on-restore-failure=cold-start")
    _log.warning("restore.failed", checkpoint=what, error=str(error), action="cold start")
    return None, []


def _raise_pid_floor(settings: Settings) -> None:
    if settings.pid_floor:
        done, why = procs.raise_pid_floor(settings.pid_floor)
        if not done:
            _log.warning("pid_floor.unavailable", detail=why,
                         consequence="a later restore may collide with crikpy's own PIDs")
