"""What `crikpy run` does, start to finish.

1. Block signals (the supervisor waits for them) and become a subreaper when not PID 1.
2. If the store's latest pointer names a checkpoint, restore it; if that fails, quarantine it and
   cold-start the command (or stop, with --on-restore-failure=fail).
3. Otherwise start the command, above the PID floor.
4. Supervise. On SIGTERM, decide by --checkpoint-on (asking the node-state sources for
   node-shutdown) and checkpoint; on a cloud interruption notice, checkpoint at once and stop the
   workload; every --checkpoint-interval, checkpoint with the workload left running.
5. When the workload ends on its own, or is stopped without a checkpoint being wanted, its last
   checkpoint is stale: clear the latest pointer so the next start is cold.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Sequence

from crikpy import __version__, log, procs, supervisor
from crikpy.checkpoint.commit import CheckpointRepository, RaceLost
from crikpy.deadline import Deadline
from crikpy.errors import (CorruptCheckpoint, CrikpyError, CriuUnavailable, RestoreFailed,
                           StoreError)
from crikpy.migrate import Migrator
from crikpy.nodestate import policy as nodestate_policy
from crikpy.settings import Settings
from crikpy.stores import open_store

_log = log.get()
# How long before the machine goes a cloud's notice comes: the time a notice checkpoint may take.
NOTICE_LEAD_SECONDS = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}


class NothingToRun(CrikpyError):
    exit_code = 2


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
    sources = nodestate_policy.build_sources(settings)
    watcher = None
    if settings.checkpoint_on != "never":
        watcher = nodestate_policy.NoticeWatcher(sources, settings.notice_poll_interval).start()
    if settings.checkpoint_interval:
        _log_incremental_support(settings)

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

    declined = False
    notice_handled = stopped_for_notice = False
    next_periodic = time.monotonic() + (settings.checkpoint_interval or 0)

    def checkpoint(pid: int, deadline: Deadline, reason: str, leave_running: bool = False) -> bool:
        _log.info("checkpoint.started", pid=pid, reason=reason,
                  seconds_left=round(deadline.remaining(), 1))
        watch = log.Stopwatch()
        try:
            migrator.checkpoint(pid, command, deadline, leave_running)
            _log.info("checkpoint.done", pid=pid, reason=reason, seconds=watch.elapsed(),
                      peak_rss_mib=log.peak_rss_mib())
            return True
        except RaceLost as e:
            _log.error("checkpoint.race_lost", detail=str(e),
                       action="another process with this name committed first; this checkpoint "
                              "stays aside")
        except CrikpyError as e:
            _log.error("checkpoint.failed", reason=reason, error=str(e), seconds=watch.elapsed(),
                       action="the workload runs on; the previous checkpoint stays latest")
        return False

    def log_lead_time() -> None:
        """How much earlier than SIGTERM the notice came: time the upload did not have to wait."""
        if watcher and watcher.seen_at:
            _log.info("notice.lead_time", source=watcher.source,
                      seconds=round(time.monotonic() - watcher.seen_at, 1))

    def on_sigterm(pid: int) -> str:
        nonlocal declined
        deadline = Deadline.for_grace_period(settings.grace_period)
        log_lead_time()
        if not _checkpoint_wanted(settings, sources, watcher):
            declined = True
            return supervisor.DECLINED
        return supervisor.COMMITTED if checkpoint(pid, deadline, "sigterm") else supervisor.FAILED

    def on_tick(pid: int) -> bool:
        nonlocal notice_handled, stopped_for_notice, next_periodic
        if watcher and watcher.notice and not notice_handled:
            notice_handled = True
            lead = NOTICE_LEAD_SECONDS.get(watcher.source, settings.grace_period)
            deadline = Deadline.for_grace_period(max(lead, settings.grace_period),
                                                 started=watcher.seen_at)
            if checkpoint(pid, deadline, f"notice: {watcher.notice}"):
                _log.info("notice.checkpoint_committed", source=watcher.source,
                          seconds_after_notice=round(time.monotonic() - watcher.seen_at, 1))
                stopped_for_notice = True
                return True
            procs.signal_tree(pid, signal.SIGCONT)
        if settings.checkpoint_interval and time.monotonic() >= next_periodic:
            # As long as any checkpoint may take: a SIGTERM arriving meanwhile waits for it.
            checkpoint(pid, Deadline.for_grace_period(settings.grace_period), "periodic",
                       leave_running=True)
            next_periodic = time.monotonic() + settings.checkpoint_interval
        return False

    wants_ticks = bool(settings.checkpoint_interval or (watcher and watcher.sources))
    outcome = supervisor.supervise(pid, on_sigterm, on_tick if wants_ticks else None)
    if watcher:
        watcher.stop()
    if stopped_for_notice:
        log_lead_time()  # the SIGTERM that ended the wait after a notice checkpoint
    if outcome.how == supervisor.EXITED or declined:
        why = "workload exited" if outcome.how == supervisor.EXITED else "stopped without checkpoint"
        repo.clear_latest(reason=f"{why}, code {outcome.exit_code}")
        _log.info("latest.cleared", reason=why, exit_code=outcome.exit_code)
    return outcome.exit_code


def _checkpoint_wanted(settings: Settings, sources: list,
                       watcher: nodestate_policy.NoticeWatcher | None) -> bool:
    """What this SIGTERM means, by --checkpoint-on; logs the decision and who made it."""
    if settings.checkpoint_on == "never":
        _log.info("checkpoint.decision", checkpoint=False, reason="checkpoint-on never")
        return False
    if settings.checkpoint_on == "always":
        return True
    if watcher and watcher.notice:
        _log.info("checkpoint.decision", checkpoint=True, source=watcher.source,
                  detail=watcher.notice)
        return True
    watch = log.Stopwatch()
    answer = nodestate_policy.decide(sources, settings.node_state_timeout)
    if answer is None:
        _log.info("checkpoint.decision", checkpoint=False, source=None, seconds=watch.elapsed(),
                  detail=f"no node-state source answered within {settings.node_state_timeout} s")
        return False
    _log.info("checkpoint.decision", checkpoint=answer.leaving, source=answer.source,
              detail=answer.detail, seconds=watch.elapsed())
    return answer.leaving


def _log_incremental_support(settings: Settings) -> None:
    from crikpy.criu import preflight  # noqa: PLC0415

    finding = preflight.soft_dirty_finding(settings.criu_binary)
    _log.info("checkpoint.periodic", interval_seconds=settings.checkpoint_interval,
              dirty_tracking=finding.status == preflight.OK, detail=finding.detail,
              mode="full dumps")


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
