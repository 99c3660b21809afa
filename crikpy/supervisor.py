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
- Between signals, `on_tick(pid)` runs every half second (notices, periodic checkpoints). When it
  returns True, a checkpoint was committed ahead of node loss with the tree left frozen: the tree
  is killed and crikpy waits for its own SIGTERM, then exits 0.
- Every other catchable signal goes to the workload's root process unchanged.
- Synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT) and
  SIGTTIN/SIGTTOU keep their defaults, as in tini.

The supervisor knows nothing of CRIU or stores: checkpointing is the callback's business.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Callable, Sequence

from crikpy import log, procs

_UNCAUGHT = {signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
             signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT, signal.SIGTTIN,
             signal.SIGTTOU}
WAITED = frozenset(signal.valid_signals()) - _UNCAUGHT

EXITED, CHECKPOINTED, STOPPED = "exited", "checkpointed", "stopped"
COMMITTED, FAILED, DECLINED = "committed", "failed", "declined"  # what on_sigterm returns
TICK_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Outcome:
    exit_code: int
    # EXITED: the workload ended on its own; STOPPED: it ended after crikpy forwarded a SIGTERM;
    # CHECKPOINTED: its checkpoint was committed and crikpy ended it.
    how: str


def block_signals() -> None:
    """Call once, before any child starts, so that no signal is lost before the loop runs."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)


def spawn(argv: Sequence[str]) -> int:
    """Start the workload in its own session, with an empty signal mask; returns its PID.

    Its own session keeps its process group apart from crikpy's, which a restore needs (CRIU
    restores sessions and groups as they were). posix_spawn rather than subprocess: the
    supervisor reaps with waitpid(-1), and no Popen object must wait on the same child.
    Raises FileNotFoundError / PermissionError when the command cannot be run.
    """
    procs.close_inherited_fds()
    return os.posix_spawnp(argv[0], list(argv), os.environ, setsid=True, setsigmask=())


def supervise(pid: int, on_sigterm: Callable[[int], str] | None,
              on_tick: Callable[[int], bool] | None = None) -> Outcome:
    """Run the loop until the workload rooted at `pid` ends; see the module's signal rules."""
    _log = log.get().bind(pid=pid)
    checkpoint_wanted = on_sigterm is not None
    forwarded_term = False
    while True:
        if on_tick is None:
            info = signal.sigwaitinfo(WAITED)
        else:
            info = signal.sigtimedwait(WAITED, TICK_SECONDS)
            if info is None:
                if on_tick(pid):
                    _end_frozen_tree(pid)
                    _log.info("workload.stopped", reason="checkpoint committed ahead of node loss")
                    return _wait_for_own_sigterm()
                continue
        sig = info.si_signo
        if sig == signal.SIGCHLD:
            status = _reap_all(pid)
            if status is not None:
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                how = STOPPED if forwarded_term else EXITED
                _log.info("workload.exited", exit_code=code, how=how)
                return Outcome(code, how)
        elif sig == signal.SIGTERM and checkpoint_wanted:
            checkpoint_wanted = False
            result = on_sigterm(pid)
            if result == COMMITTED:
                _end_frozen_tree(pid)
                return Outcome(0, CHECKPOINTED)
            if result == FAILED:
                procs.signal_tree(pid, signal.SIGCONT)
            _forward(pid, sig, _log)
            forwarded_term = True
        else:
            _forward(pid, sig, _log)
            forwarded_term |= sig == signal.SIGTERM


def _wait_for_own_sigterm() -> Outcome:
    """The workload is checkpointed and gone; the pod still runs until the node goes."""
    while True:
        sig = signal.sigwaitinfo(WAITED).si_signo
        if sig == signal.SIGCHLD:
            _reap_all(-1)
        elif sig in (signal.SIGTERM, signal.SIGINT):
            return Outcome(0, CHECKPOINTED)


def _forward(pid: int, sig: int, _log) -> None:
    try:
        os.kill(pid, sig)
        _log.info("signal.forwarded", signal=signal.Signals(sig).name)
    except ProcessLookupError:
        pass


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
