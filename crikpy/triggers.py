"""When to checkpoint a running workload: on SIGTERM, on an interruption notice, periodically.

- SIGTERM: --checkpoint-on decides. `always` checkpoints; `never` declines; `node-shutdown` asks
  the node-state sources (or takes a notice already seen) and declines when the node stays.
  The deadline counts from the SIGTERM's arrival, which may be before crikpy took it. When the
  SIGTERM is passed on to the workload (declined, or by default after a failed checkpoint), its
  state is past its last checkpoint from then on: the pointer is cleared first, bounded, so
  that the next start is cold even if the kubelet's SIGKILL ends the shutdown.
- A cloud interruption notice: checkpoint at once with the cloud's lead time as the deadline
  (cut to the grace period if a SIGTERM comes meanwhile); once committed, the supervisor stops
  the workload and waits for crikpy's own SIGTERM, or `notice_wait()` seconds.
- --checkpoint-interval: checkpoint with the workload left running; a SIGTERM interrupts it,
  since the final checkpoint that follows supersedes it.
Any error on these paths is a failed checkpoint: the workload runs on.
Each checkpoint's outcome is also an Event about the pod (crikpy.podevents), once it is decided.
The supervisor calls `on_sigterm` and `on_tick`; this module never touches processes beyond
resuming a tree whose notice checkpoint failed.
"""

from __future__ import annotations

import signal
import time

from crikpy import budget, log, procs
from crikpy.deadline import ABORT, SHORTEN, Deadline, before_sigkill, sigterm_taken
from crikpy.errors import CrikpyError, RaceLost
from crikpy.checkpoint.manifest import Manifest
from crikpy.migrate import Migrator
from crikpy.nodestate import policy as nodestate_policy
from crikpy.podevents import PodEvents
from crikpy.settings import NOTICE_LEAD_SECONDS, Settings
from crikpy.supervisor import SigtermResult

_log = log.get()


class Triggers:
    def __init__(self, settings: Settings, migrator: Migrator, command: list[str],
                 events: PodEvents) -> None:
        self.settings, self.migrator, self.command = settings, migrator, command
        self.events = events
        self.sources = nodestate_policy.build_sources(settings)
        self.watcher = None
        if settings.checkpoint_on != "never":
            self.watcher = nodestate_policy.NoticeWatcher(
                self.sources, settings.notice_poll_interval).start()
        # The checkpoint committed ahead of the workload's end (SIGTERM, notice): its
        # housekeeping waits until the frozen tree is gone.
        self.committed_at_end: str | None = None
        self._notice_handled = self._stopped_for_notice = False
        self._next_periodic = time.monotonic() + (settings.checkpoint_interval or 0)
        if settings.checkpoint_interval:
            _log.info("checkpoint.periodic", interval_seconds=settings.checkpoint_interval,
                      mode="full dumps")

    @property
    def wants_ticks(self) -> bool:
        return bool(self.settings.checkpoint_interval or (self.watcher and self.watcher.sources))

    def stop(self) -> None:
        if self.watcher:
            self.watcher.stop()
        if self._stopped_for_notice:
            self._log_lead_time()  # the SIGTERM that ended the wait after a notice checkpoint

    def notice_wait(self) -> float:
        return self.settings.notice_wait_seconds(self.watcher.source if self.watcher else None)

    def on_sigterm(self, pid: int) -> SigtermResult:
        deadline = Deadline.for_grace_period(self.settings.grace_period, started=sigterm_taken())
        self._log_lead_time()
        try:
            wanted = self._checkpoint_wanted()
        except Exception as e:  # noqa: BLE001  (a source's bug must not kill PID 1)
            _log.error("checkpoint.decision", checkpoint=False, error=f"{type(e).__name__}: {e}")
            wanted = False
        if not wanted:
            self._clear_pointer("stopped without a checkpoint")
            return SigtermResult.DECLINED
        manifest = self._checkpoint(pid, deadline, "sigterm")
        if manifest is not None:
            self.committed_at_end = manifest.id
            return SigtermResult.COMMITTED
        if self.settings.after_failed_checkpoint == "clear":
            self._clear_pointer("its checkpoint failed")
        return SigtermResult.FAILED

    def _clear_pointer(self, why: str) -> None:
        """The SIGTERM goes on to the workload next: the pointer must not survive its shutdown.
        Out of the workload's shutdown time, so briefly."""
        bound = before_sigkill(self.settings.grace_period, budget.CLEAR_SECONDS)
        try:
            self.migrator.repo.clear_latest(f"SIGTERM passed on to the workload: {why}", bound)
        except CrikpyError as e:
            _log.warning("latest.not_cleared", error=str(e),
                         consequence="the next start restores the last checkpoint, from "
                                     "before this shutdown")

    def on_tick(self, pid: int) -> bool:
        """True when a notice checkpoint was committed and the frozen tree should be ended."""
        watcher = self.watcher
        if watcher and watcher.notice and not self._notice_handled:
            self._notice_handled = True
            lead = NOTICE_LEAD_SECONDS.get(watcher.source, self.settings.grace_period)
            deadline = Deadline.for_grace_period(max(lead, self.settings.grace_period),
                                                 started=watcher.seen_at, on_sigterm=SHORTEN)
            manifest = self._checkpoint(pid, deadline, f"notice: {watcher.notice}")
            if manifest is not None:
                _log.info("notice.checkpoint_committed", source=watcher.source,
                          seconds_after_notice=round(time.monotonic() - watcher.seen_at, 1))
                self._stopped_for_notice = True
                self.committed_at_end = manifest.id
                return True
            procs.signal_tree(pid, signal.SIGCONT)
        if self.settings.checkpoint_interval and time.monotonic() >= self._next_periodic:
            # As long as any checkpoint may take; a SIGTERM arriving meanwhile interrupts it.
            deadline = Deadline.for_grace_period(self.settings.grace_period, on_sigterm=ABORT)
            manifest = self._checkpoint(pid, deadline, "periodic", leave_running=True)
            if manifest is not None:  # the tree runs on meanwhile
                self.migrator.repo.housekeeping(
                    manifest.id, Deadline.after(budget.HOUSEKEEPING_SECONDS, on_sigterm=ABORT))
            self._next_periodic = time.monotonic() + self.settings.checkpoint_interval
        return False

    def _checkpoint(self, pid: int, deadline: Deadline, reason: str,
                    leave_running: bool = False) -> Manifest | None:
        """The committed checkpoint's manifest; None when it failed (logged, and an Event)."""
        _log.info("checkpoint.started", pid=pid, reason=reason,
                  seconds_left=round(deadline.remaining(), 1))
        watch = log.Stopwatch()
        trigger = reason.partition(":")[0]  # "notice: spot terminate at ..." -> "notice"
        try:
            manifest = self.migrator.checkpoint(pid, self.command, deadline, leave_running)
        except RaceLost as e:
            _log.error("checkpoint.race_lost", detail=str(e),
                       action="another process with this name committed first; this checkpoint "
                              "stays aside")
            self.events.checkpoint_failed(trigger, str(e), deadline)
            return None
        except Exception as e:  # noqa: BLE001  (whatever it is, it is a failed checkpoint)
            expected = isinstance(e, CrikpyError)
            error = str(e) if expected else f"{type(e).__name__}: {e}"
            _log.error("checkpoint.failed", reason=reason, seconds=watch.elapsed(), error=error,
                       exc_info=not expected, action="the workload runs on")
            self.events.checkpoint_failed(trigger, error, deadline)
            return None
        seconds = watch.elapsed()
        _log.info("checkpoint.done", pid=pid, reason=reason, seconds=seconds,
                  peak_rss_mib=log.peak_rss_mib())
        self.events.checkpointed(manifest, seconds, trigger, deadline)
        return manifest

    def _log_lead_time(self) -> None:
        """How much earlier than SIGTERM the notice came: time the upload did not have to wait."""
        if self.watcher and self.watcher.seen_at:
            _log.info("notice.lead_time", source=self.watcher.source,
                      seconds=round(time.monotonic() - self.watcher.seen_at, 1))

    def _checkpoint_wanted(self) -> bool:
        """What this SIGTERM means, by --checkpoint-on; logs the decision and who made it."""
        settings, watcher = self.settings, self.watcher
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
        answer = nodestate_policy.decide(self.sources, settings.node_state_timeout)
        if answer is None:
            _log.info("checkpoint.decision", checkpoint=False, source=None,
                      seconds=watch.elapsed(),
                      detail=f"no node-state source answered within "
                             f"{settings.node_state_timeout} s")
            return False
        _log.info("checkpoint.decision", checkpoint=answer.leaving, source=answer.source,
                  detail=answer.detail, seconds=watch.elapsed())
        return answer.leaving

