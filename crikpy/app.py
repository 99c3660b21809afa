"""What `crikpy run` does, start to finish: start, supervise, finish.

start:
  1. Block signals (the supervisor waits for them); become a subreaper when not PID 1.
  2. Restore what the latest pointer names (crikpy.recovery says what a failure means), or
     start the command cold, above the PID floor.
  3. If that loaded the store's libraries (boto3), re-exec into the same command with a
     Handover: execve keeps the PID, the children, the blocked signals and those pending, and
     the new image opens the store only when a checkpoint needs it. So PID 1 stays lean while
     it waits, which is nearly all the time. Everything the start learnt that a checkpoint
     needs crosses in the Handover, and nothing else does.
supervise: the PID-1 loop (crikpy.supervisor); crikpy.triggers says when to checkpoint.
finish: housekeeping of a checkpoint committed at the end, once its frozen tree is gone; and
  when the workload ended on its own, its last checkpoint is older than the state it ended in:
  the pointer is cleared so that the next start is cold. (A SIGTERM passed on to the workload
  clears it at once, crikpy.triggers.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Sequence

from crikpy import __version__, budget, log, procs, recovery, supervisor
from crikpy.checkpoint import extras
from crikpy.checkpoint.manifest import REDACTED
from crikpy.checkpoint.pointer import Pointer
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.container import identity
from crikpy.container.tracking import ContainerFiles
from crikpy.criu import session
from crikpy.deadline import (ABORT, Deadline, before_sigkill, sigterm_arrived_at,
                             sigterm_seen_before_exec)
from crikpy.errors import (COMMAND_NOT_EXECUTABLE, COMMAND_NOT_FOUND, CrikpyError, Fault,
                           NodeFault)
from crikpy.migrate import Migrator
from crikpy.parts import LazyRepository, open_repository
from crikpy.podevents import PodEvents
from crikpy.settings import Settings
from crikpy.tasks import TaskGroup
from crikpy.triggers import Triggers

_log = log.get()


class NothingToRun(CrikpyError):
    fault = Fault.USAGE


@dataclasses.dataclass(frozen=True)
class Handover:
    """What crosses the lean re-exec, written and read only here.

    `sigterm_at`: when a SIGTERM pending across the exec arrived (a deadline counts from it).
    `owner` and `pointer`: who this pod start is in the pointers it writes, and the pointer as
    it found it at its start (or last wrote it): without them the new image would take whatever
    another pod wrote meanwhile for its own (crikpy.checkpoint.pointer).
    """

    ENV = "CRIKPY_HANDOVER"

    pid: int
    command: list[str]
    sigterm_at: float | None
    owner: str
    pointer: Pointer | None
    criu_version: str

    def to_env(self) -> dict[str, str]:
        state = dataclasses.asdict(self)
        return {self.ENV: json.dumps(state)}

    @classmethod
    def take(cls) -> "Handover | None":
        """The handover this process image was started with, taken out of the environment (the
        workload must not inherit it); None on a first start."""
        text = os.environ.pop(cls.ENV, None)
        if text is None:
            return None
        state = json.loads(text)
        found = state["pointer"]
        return cls(pid=int(state["pid"]), command=[str(a) for a in state["command"]],
                   sigterm_at=state["sigterm_at"], owner=str(state["owner"]),
                   pointer=Pointer.from_json(found) if found is not None else None,
                   criu_version=str(state["criu_version"]))


@dataclasses.dataclass
class Workload:
    """The running workload and what supervising it needs."""

    pid: int
    command: list[str]
    migrator: Migrator  # and through it the repository
    events: PodEvents


def run(settings: Settings, command: Sequence[str]) -> int:
    supervisor.block_signals()
    procs.give_big_buffers_back()
    if os.getpid() != 1:
        procs.set_child_subreaper()
    extras.check_savable(settings.additional_paths)
    handover = Handover.take()
    workload = _resume(settings, handover) if handover else _start(settings, list(command))
    if isinstance(workload, int):
        return workload  # the command could not be run
    if handover is None and "boto3" in sys.modules:
        repo = workload.migrator.repo
        _reexec_lean(Handover(pid=workload.pid, command=workload.command,
                              sigterm_at=sigterm_arrived_at(), owner=repo.owner,
                              pointer=repo.known, criu_version=workload.migrator.criu_version))
    triggers = Triggers(settings, workload.migrator, workload.command, workload.events)
    outcome = supervisor.supervise(workload.pid, triggers.on_sigterm,
                                   triggers.on_tick if triggers.wants_ticks else None,
                                   notice_wait=triggers.notice_wait())
    triggers.stop()
    _finish(settings, workload, outcome, triggers)
    return outcome.exit_code


def _start(settings: Settings, command: list[str]) -> Workload | int:
    """Restore the latest checkpoint, or start `command` cold; an exit code if it cannot run."""
    files = ContainerFiles.at_start(settings) if _in_container() else None  # before a restore
    repo = open_repository(settings)
    # Asked beside the restore, which does not need it: a start waits for neither in turn.
    version = TaskGroup("criu-version", 1).submit(_criu_version, settings)
    migrator = Migrator(settings, repo, files)
    events = PodEvents.from_environment(settings, announce=True)
    shown = _shown_command(settings)
    _log.info("crikpy.started", version=__version__, store=settings.store,
              workload=settings.workload_key, command=shown(command) if command else None)
    _warn_about_secrets(settings, repo)
    program = (files.identity(None, command, identity.inherited_environment(), settings)
               if files else None)
    start = recovery.restore_latest(settings, repo, migrator, events, program)
    if isinstance(start, recovery.Restored):
        _raise_pid_floor(settings)
        if start.command == [REDACTED]:  # recorded as such: only the given one says it
            command = command or start.command
        else:
            if command and command != start.command:
                _log.warning("restore.command_differs", given=shown(command),
                             restored=shown(start.command))
            command = start.command
        migrator.criu_version = version.result()
        return Workload(start.pid, command, migrator, events)
    if not command:
        raise NothingToRun("nothing to run: no checkpoint to restore and no command given; "
                           "use `crikpy run -- COMMAND [ARGS...]`")
    _raise_pid_floor(settings)
    try:
        pid = supervisor.spawn(command, identity.inherited_environment(),
                               own_ipc=settings.ipc_namespace == "own")
    except OSError as e:
        _log.error("workload.not_started", command=shown(command), error=e.strerror)
        return COMMAND_NOT_FOUND if isinstance(e, FileNotFoundError) else COMMAND_NOT_EXECUTABLE
    _log.info("workload.started", pid=pid, command=shown(command))
    migrator.criu_version = version.result()
    return Workload(pid, command, migrator, events)


def _resume(settings: Settings, handover: Handover) -> Workload:
    """Take over the workload that this process, before its lean re-exec, started."""
    if handover.sigterm_at is not None:
        sigterm_seen_before_exec(handover.sigterm_at)
    repo = LazyRepository(settings, owner=handover.owner, known=handover.pointer)
    _log.info("crikpy.lean", pid=handover.pid, detail="re-executed without the store's "
              "libraries; they load again when a checkpoint needs them")
    files = ContainerFiles.resumed(settings) if _in_container() else None
    migrator = Migrator(settings, repo, files, handover.criu_version)
    events = PodEvents.from_environment(settings, announce=False)
    return Workload(handover.pid, handover.command, migrator, events)


def _reexec_lean(handover: Handover) -> None:
    """Become a fresh image of crikpy that goes on from `handover`; returns only if the exec
    failed (PID 1 then goes on as it is)."""
    env = dict(os.environ, **handover.to_env())
    argv = [sys.executable, "-m", "crikpy", *sys.argv[1:]]
    log.drain()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as e:
        _log.warning("crikpy.lean_failed", error=e.strerror,
                     consequence="PID 1 keeps the store's libraries in memory while it waits")


def _finish(settings: Settings, workload: Workload, outcome: supervisor.Outcome,
            triggers: Triggers) -> None:
    """After the loop: the frozen tree of a committed checkpoint is gone by now."""
    if triggers.committed_at_end is not None:
        workload.migrator.repo.housekeeping(
            triggers.committed_at_end,
            before_sigkill(settings.grace_period, budget.HOUSEKEEPING_SECONDS))
    if outcome.how is supervisor.Ended.EXITED:
        try:
            workload.migrator.repo.clear_latest(f"workload exited, code {outcome.exit_code}",
                                       Deadline.after(budget.STORE_CALL_SECONDS))
        except CrikpyError as e:
            _log.warning("latest.not_cleared", error=str(e),
                         consequence="the next start restores the last checkpoint")


def _criu_version(settings: Settings) -> str:
    """CRIU's version, asked once at the start (bounded): never later, while a tree is frozen."""
    watch = log.Stopwatch()
    try:
        version = session.version(settings.criu_binary,
                                  Deadline.after(budget.CRIU_VERSION_SECONDS, on_sigterm=ABORT))
    except (CrikpyError, OSError) as e:
        level = _log.info if isinstance(e, NodeFault) else _log.warning
        level("criu.version_unknown", error=str(e), seconds=watch.elapsed(),
              consequence="checkpoints record its version as unknown")
        return "unknown"
    _log.debug("criu.version", version=version, seconds=watch.elapsed())
    return version


def _in_container() -> bool:
    """crikpy is the container's entrypoint (PID 1), so its filesystem is the container's: the
    workload's changes to it are carried. Run any other way (a subreaper on a host, as the unit
    tests run it), there is no container to carry, and crikpy says so."""
    if os.getpid() == 1:
        return True
    _log.info("files.not_carried", reason="crikpy is not PID 1, so not a container's entrypoint: "
                                          "only additional paths are carried")
    return False


def _shown_command(settings: Settings):
    """How logs show a command: not at all with --redact-command (it may hold a secret)."""
    if settings.redact_command:
        return lambda command: [REDACTED]
    return lambda command: command


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
