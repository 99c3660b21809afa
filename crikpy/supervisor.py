"""The PID-1 loop: run the workload, forward signals, reap zombies, report how it ended.

Signal rules (tini's, plus one):
- crikpy blocks every catchable signal and takes them one at a time with sigwaitinfo, so nothing
  interrupts a checkpoint half-way; children start with an empty mask.
- SIGCHLD: every exited child is reaped (orphans included: crikpy is PID 1 or a subreaper). When
  the workload's root exits, the loop ends with its code, or 128+N if signal N killed it.
- SIGTERM, while a checkpoint is wanted: `on_sigterm(pid)` decides and checkpoints. COMMITTED:
  the frozen tree is killed and the loop ends with 0. FAILED: the tree is let run on (SIGCONT)
  and gets the SIGTERM, so it shuts down as if crikpy were not there. DECLINED (no checkpoint
  wanted for this stop): the SIGTERM is forwarded. This happens once; later SIGTERMs are
  forwarded.
- Between signals, `on_tick(pid)` runs every half second (notices, periodic checkpoints), however
  often signals come. When it returns True, a checkpoint was committed ahead of node loss with
  the tree left frozen: the tree is killed and crikpy waits for its own SIGTERM, then exits 0;
  if none comes within `notice_wait` seconds (the node was not reclaimed after all), it exits 0
  anyway, so the container restarts and restores.
- A callback that raises is a failed checkpoint, whatever the error: the tree is let run on
  (SIGCONT) and a SIGTERM is forwarded. PID 1 never dies of its own error while the workload lives.
- Every other catchable signal goes to the workload's root process unchanged, except SIGPIPE
  and SIGXFSZ that crikpy's own writes raised (its log's reader gone, a file too big): they
  are crikpy's, and forwarding one would kill the workload, then log, and raise it again.
- Synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT) and
  SIGTTIN/SIGTTOU keep their defaults, as in tini.

The supervisor knows nothing of CRIU or stores: checkpointing is the callback's business.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
import time
from typing import Callable, Mapping, Sequence, TypeVar

from crikpy import log, procs

_UNCAUGHT = {signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
             signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT, signal.SIGTTIN,
             signal.SIGTTOU}
WAITED = frozenset(signal.valid_signals()) - _UNCAUGHT
_RAISED_BY_OWN_WRITES = {signal.SIGPIPE, signal.SIGXFSZ}

TICK_SECONDS = 0.5
T = TypeVar("T")


class SigtermResult(enum.Enum):
    """What `on_sigterm` did with a SIGTERM."""

    COMMITTED = "committed"  # a checkpoint holds the frozen tree: it is ended
    FAILED = "failed"  # the checkpoint failed: the tree runs on and gets the SIGTERM
    DECLINED = "declined"  # no checkpoint wanted for this stop: the SIGTERM is passed on


class Ended(enum.Enum):
    """How the workload ended."""

    EXITED = "exited"  # on its own
    STOPPED = "stopped"  # after crikpy passed a SIGTERM on to it
    CHECKPOINTED = "checkpointed"  # its checkpoint was committed and crikpy ended it


@dataclasses.dataclass(frozen=True)
class Outcome:
    exit_code: int
    how: Ended


def block_signals() -> None:
    """Call once, before any child starts, so that no signal is lost before the loop runs."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)


def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
          own_ipc: bool = False) -> int:
    """Start the workload in its own session, as tini would; returns its PID.

    Its own session keeps its process group apart from crikpy's, which a restore needs (CRIU
    restores sessions and groups as they were). Every signal gets its default disposition and
    the mask is empty: Python ignores SIGPIPE and SIGXFSZ, glibc's posix_spawn ignores its
    internal signals, and an ignored signal survives exec (and every restore after it). fork and
    exec rather than subprocess: the supervisor reaps with waitpid(-1), and no Popen object must
    wait on the same child. Raises FileNotFoundError / PermissionError when the command cannot
    be run.

    With `own_ipc`, the workload gets an IPC namespace of its own, with the container's IPC
    sysctls, so that CRIU checkpoints its SysV IPC with it. Where it cannot (crikpy lacks
    CAP_SYS_ADMIN), it starts in crikpy's, and `workload.ipc_shared` says why.
    """
    procs.close_inherited_fds()
    sysctls = procs.ipc_sysctls() if own_ipc else {}
    report_r, report_w = os.pipe2(os.O_CLOEXEC)  # what the child reports: "<kind> <detail>\n"
    pid = os.fork()
    if pid == 0:  # the child: nothing here may raise past os._exit
        try:
            os.close(report_r)
            os.setsid()
            if own_ipc:
                entered, problems = procs.enter_new_ipc_namespace(sysctls)
                for problem in problems:
                    os.write(report_w, f"{'sysctl' if entered else 'shared'} {problem}\n".encode())
            procs.default_all_signals()
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execvpe(argv[0], list(argv), dict(os.environ if env is None else env))
        except OSError as e:
            os.write(report_w, f"exec {e.errno}\n".encode())
        finally:
            os._exit(127)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        reported = report.read().decode().splitlines()  # EOF: the exec closed the pipe
    failed = None
    for line in reported:
        kind, _, detail = line.partition(" ")
        if kind == "exec":
            failed = int(detail)
        elif kind == "shared":
            log.get().info("workload.ipc_shared", reason=detail,
                           consequence="the workload shares crikpy's IPC namespace: a checkpoint "
                                       "is refused while it holds SysV IPC objects; crikpy needs "
                                       "CAP_SYS_ADMIN to give it one of its own")
        else:
            log.get().warning("workload.ipc_sysctl_not_copied", problem=detail)
    if failed is not None:
        os.waitpid(pid, 0)
        raise OSError(failed, os.strerror(failed), argv[0])
    return pid


def supervise(pid: int, on_sigterm: Callable[[int], SigtermResult] | None,
              on_tick: Callable[[int], bool] | None = None,
              notice_wait: float = float("inf")) -> Outcome:
    """Run the loop until the workload rooted at `pid` ends; see the module's signal rules."""
    _log = log.get().bind(pid=pid)
    on_sigterm = on_sigterm and _guarded(on_sigterm, SigtermResult.FAILED, _log)
    on_tick = on_tick and _guarded(on_tick, False, _log)
    checkpoint_wanted = on_sigterm is not None
    forwarded_term = False
    next_tick = time.monotonic() + TICK_SECONDS
    while True:
        if on_tick is None:
            info = signal.sigwaitinfo(WAITED)
        else:
            # Ticks keep their time however often signals come (a SIGCHLD per exiting helper).
            if time.monotonic() >= next_tick:
                if on_tick(pid):
                    _end_frozen_tree(pid)
                    _log.info("workload.stopped", reason="checkpoint committed ahead of node loss")
                    return _wait_for_own_sigterm(notice_wait, _log)
                next_tick = time.monotonic() + TICK_SECONDS
            info = signal.sigtimedwait(WAITED, max(0.0, next_tick - time.monotonic()))
            if info is None:
                continue
        sig = info.si_signo
        if sig in _RAISED_BY_OWN_WRITES and info.si_pid == os.getpid():
            continue
        if sig == signal.SIGCHLD:
            status = _reap_all(pid)
            if status is not None:
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                how = Ended.STOPPED if forwarded_term else Ended.EXITED
                _log.info("workload.exited", exit_code=code, how=how.value)
                return Outcome(code, how)
        elif sig == signal.SIGTERM and checkpoint_wanted:
            checkpoint_wanted = False
            result = on_sigterm(pid)
            if result is SigtermResult.COMMITTED:
                _end_frozen_tree(pid)
                _log.info("workload.stopped", reason="checkpoint committed")
                return Outcome(0, Ended.CHECKPOINTED)
            if result is SigtermResult.FAILED:
                procs.signal_tree(pid, signal.SIGCONT)
            _forward(pid, sig, _log)
            forwarded_term = True
        else:
            _forward(pid, sig, _log)
            forwarded_term |= sig == signal.SIGTERM


def _guarded(callback: Callable[[int], T], on_error: T, _log) -> Callable[[int], T]:
    def call(pid: int) -> T:
        try:
            return callback(pid)
        except Exception as e:  # noqa: BLE001  (whatever it is, the workload must live on)
            _log.error("checkpoint.failed", error=f"{type(e).__name__}: {e}", unexpected=True,
                       action="the workload runs on", exc_info=True)
            procs.signal_tree(pid, signal.SIGCONT)
            return on_error
    return call


def _wait_for_own_sigterm(timeout: float, _log) -> Outcome:
    """The workload is checkpointed and gone; the pod still runs until the node goes."""
    ends = time.monotonic() + timeout
    while (left := ends - time.monotonic()) > 0:
        info = signal.sigtimedwait(WAITED, min(left, 3600.0))
        if info is None:
            continue
        if info.si_signo == signal.SIGCHLD:
            _reap_all(-1)
        elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
            return Outcome(0, Ended.CHECKPOINTED)
    _log.warning("notice.no_termination", waited_seconds=timeout,
                 action="exiting so that the container restarts and restores the checkpoint")
    return Outcome(0, Ended.CHECKPOINTED)


def _forward(pid: int, sig: int, _log) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    _log.info("signal.forwarded", signal=signal_name(sig))


def signal_name(sig: int) -> str:
    """`SIGTERM`; a real-time signal, which has no name of its own, as `SIGRTMIN+3`."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"


def _reap_all(root: int) -> int | None:
    """Reap every exited child; the root's wait status if it was among them."""
    root_status = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return root_status
        if pid == 0:
            return root_status
        if pid == root:
            root_status = status


def _end_frozen_tree(root: int) -> None:
    procs.signal_tree(root, signal.SIGKILL)
    try:
        os.waitpid(root, 0)
    except ChildProcessError:
        pass
    _reap_all(root)
