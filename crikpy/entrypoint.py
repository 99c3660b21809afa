"""What `crikpy run` does, start to finish.

1. Block signals (the supervisor waits for them) and become a subreaper when not PID 1.
2. Restore what the latest pointer names (crikpy.recovery says what a failure means), or
3. start the command cold, above the PID floor.
   If that loaded the store's libraries (boto3), re-exec into the same command with the workload
   handed over: execve keeps the PID, the children, the blocked signals and those pending (the
   handover says when a pending SIGTERM arrived, which a deadline counts from), and the new
   image opens the store only when a checkpoint needs it. So PID 1 stays lean while it
   waits, which is nearly all the time.
4. Supervise; crikpy.triggers says when to checkpoint (SIGTERM, notices, periodic).
5. When the workload ends on its own, or after a SIGTERM with no checkpoint wanted, or (by
   default, --after-failed-checkpoint) after one that failed, its last checkpoint is older than
   the state it ended in: clear the latest pointer so the next start is cold.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from crikpy import __version__, log, procs, recovery, supervisor
from crikpy.checkpoint import extras
from crikpy.checkpoint.commit import CheckpointRepository, LazyRepository, open_repository
from crikpy.checkpoint.manifest import REDACTED
from crikpy.container import identity
from crikpy.container.tracking import ContainerFiles
from crikpy.deadline import Deadline, sigterm_arrived_at, sigterm_seen_before_exec
from crikpy.errors import COMMAND_NOT_EXECUTABLE, COMMAND_NOT_FOUND, USAGE_EXIT_CODE, CrikpyError
from crikpy.migrate import Migrator
from crikpy.podevents import PodEvents
from crikpy.settings import Settings
from crikpy.triggers import Triggers

_log = log.get()


# The workload's PID and command, and when a SIGTERM pending across the exec arrived.
HANDOVER = "CRIKPY_HANDOVER"


class NothingToRun(CrikpyError):
    exit_code = USAGE_EXIT_CODE


def run(settings: Settings, command: Sequence[str]) -> int:
    command = list(command)
    supervisor.block_signals()
    procs.give_big_buffers_back()
    if os.getpid() != 1:
        procs.set_child_subreaper()
    extras.check_savable(settings.additional_paths)
    handover = os.environ.pop(HANDOVER, None)
    events = PodEvents.from_environment(settings, announce=handover is None)
    if handover is not None:
        pid, command = _taken_over(handover)
        repo = LazyRepository(settings)
        _log.info("crikpy.lean", pid=pid, detail="re-executed without the store's libraries; "
                                                 "they load again when a checkpoint needs them")
        migrator = Migrator(settings, repo, ContainerFiles.resumed(settings) if _in_container()
                            else None)
        return _supervise(settings, repo, migrator, pid, command, events)
    files = ContainerFiles.at_start(settings) if _in_container() else None  # before a restore
    repo = open_repository(settings)
    migrator = Migrator(settings, repo, files)
    shown = _shown_command(settings)
    _log.info("crikpy.started", version=__version__, store=settings.store,
              workload=settings.workload_key, command=shown(command) if command else None)
    _warn_about_secrets(settings, repo)
    program = (files.identity(None, command, identity.inherited_environment(), settings)
               if files else None)
    pid, restored_command = recovery.restore_latest(settings, repo, migrator, events, program)
    if pid is not None:
        _raise_pid_floor(settings)
        if restored_command == [REDACTED]:
            command = command or restored_command
        else:
            if command and command != restored_command:
                _log.warning("restore.command_differs", given=shown(command),
                             restored=shown(restored_command))
            command = restored_command
    else:
        if not command:
            raise NothingToRun("nothing to run: no checkpoint to restore and no command given; "
                               "use `crikpy run -- COMMAND [ARGS...]`")
        _raise_pid_floor(settings)
        try:
            pid = supervisor.spawn(command, workload_environment(),
                                   own_ipc=settings.ipc_namespace == "own")
        except OSError as e:
            _log.error("workload.not_started", command=shown(command), error=e.strerror)
            return COMMAND_NOT_FOUND if isinstance(e, FileNotFoundError) else COMMAND_NOT_EXECUTABLE
        _log.info("workload.started", pid=pid, command=shown(command))
    if "boto3" in sys.modules:
        _reexec_lean(pid, command)  # returns only if the exec failed
    return _supervise(settings, repo, migrator, pid, command, events)


def _supervise(settings: Settings, repo, migrator: Migrator, pid: int,
               command: list[str], events: PodEvents) -> int:
    triggers = Triggers(settings, migrator, command, events)
    outcome = supervisor.supervise(pid, triggers.on_sigterm,
                                   triggers.on_tick if triggers.wants_ticks else None,
                                   notice_wait=triggers.notice_wait())
    triggers.stop()
    _clear_stale_pointer(settings, repo, outcome, triggers)
    return outcome.exit_code


def _clear_stale_pointer(settings: Settings, repo: CheckpointRepository,
                         outcome: supervisor.Outcome, triggers: Triggers) -> None:
    """The workload ended in a state newer than its last checkpoint: make the next start cold."""
    if outcome.how == supervisor.EXITED:
        why = "workload exited"
    elif triggers.declined:
        why = "stopped without checkpoint"
    elif triggers.failed and settings.after_failed_checkpoint == "clear":
        why = "checkpoint failed, then the workload shut down"
    else:
        return
    # After a SIGTERM, the kubelet's SIGKILL comes at the end of the grace period; a cleanup
    # may run CLEANUP_GRACE past a deadline.
    arrived = sigterm_arrived_at()
    deadline = (Deadline(arrived + settings.grace_period - 1.0) if arrived is not None
                else Deadline.after(30.0))
    try:
        repo.clear_latest(reason=f"{why}, code {outcome.exit_code}", deadline=deadline)
        _log.info("latest.cleared", reason=why, exit_code=outcome.exit_code)
    except CrikpyError as e:
        _log.warning("latest.not_cleared", reason=why, error=str(e),
                     consequence="the next start restores the previous checkpoint")


def _in_container() -> bool:
    """crikpy is the container's entrypoint (PID 1), so its filesystem is the container's: the
    workload's changes to it are carried. Run any other way (a subreaper on a host, as the unit
    tests run it), there is no container to carry, and crikpy says so."""
    if os.getpid() == 1:
        return True
    _log.info("files.not_carried", reason="crikpy is not PID 1, so not a container's entrypoint: "
                                          "only additional paths are carried")
    return False


def _reexec_lean(pid: int, command: list[str]) -> None:
    state = {"pid": pid, "command": command, "sigterm_arrived_at": sigterm_arrived_at()}
    env = dict(os.environ, **{HANDOVER: json.dumps(state)})
    argv = [sys.executable, "-m", "crikpy", *sys.argv[1:]]
    log.drain()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as e:
        _log.warning("crikpy.lean_failed", error=e.strerror,
                     consequence="PID 1 keeps the store's libraries in memory while it waits")


def _taken_over(handover: str) -> tuple[int, list[str]]:
    state = json.loads(handover)
    if state.get("sigterm_arrived_at") is not None:
        sigterm_seen_before_exec(float(state["sigterm_arrived_at"]))
    return int(state["pid"]), [str(a) for a in state["command"]]


def _shown_command(settings: Settings):
    """How logs show a command: not at all with --redact-command (it may hold a secret)."""
    if settings.redact_command:
        return lambda command: [REDACTED]
    return lambda command: command


workload_environment = identity.inherited_environment


def _warn_about_secrets(settings: Settings, repo: CheckpointRepository) -> None:
    if repo.keys is None:
        _log.warning("checkpoint.unencrypted", detail="checkpoints hold the workload's whole "
                     "memory and are stored in the clear, and restored without authentication; "
                     "set --encryption-key-file")
    exposed = sorted(k for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if k in os.environ)
    if exposed and settings.store.startswith("s3://"):
        _log.warning("checkpoint.secret_in_environment", variables=exposed,
                     detail="the workload inherits them, so every checkpoint of its memory holds "
                            "them; give crikpy its credentials with --s3-credentials-file, IRSA "
                            "or Pod Identity instead")


def _raise_pid_floor(settings: Settings) -> None:
    if settings.pid_floor:
        done, why = procs.raise_pid_floor(settings.pid_floor)
        if not done:
            _log.warning("pid_floor.unavailable", detail=why,
                         consequence="a later restore may collide with crikpy's own PIDs")
