"""The one way crikpy runs helper work beside the caller: a task group.

A group runs tasks in threads of its own, at most `most` at once: `submit` waits for a free slot,
so a producer (CRIU handing over pages) is held back rather than starting without bound. The
first task that fails cancels the group: tasks not yet submitted are refused with that failure,
the cleanups registered with the group (at its creation, or with a task) run once, right then,
so that those still running stop (an upload's stream fails, which aborts it), and `results()`
raises it. `join` waits by a deadline and never past it: a task stuck in a call that cannot be
interrupted (a socket read) is left behind on its daemon thread, and its caller goes on.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from crikpy.deadline import Deadline

T = TypeVar("T")
R = TypeVar("R")


class Task:
    """One task of a group: its result once done."""

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def result(self) -> Any:
        self.finished.wait()
        if self.error is not None:
            raise self.error
        return self.value


class TaskGroup:
    def __init__(self, name: str, most: int = 8,
                 cleanups: Iterable[Callable[[BaseException], None]] = ()) -> None:
        self.name = name
        self._slots = threading.BoundedSemaphore(most)
        self._lock = threading.Lock()
        self._tasks: list[Task] = []
        self._cleanups = list(cleanups)
        self.failure: BaseException | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, deadline: Deadline | None = None,
               cleanup: Callable[[BaseException], None] | None = None) -> Task:
        """Run fn(*args) once a slot is free; raises the group's failure instead once it failed,
        and what `deadline` raises while the slot does not come."""
        while not self._slots.acquire(timeout=0.05):
            self._raise_if_failed()
            if deadline is not None:
                deadline.check(f"{self.name}: waiting for the tasks under way")
        try:
            self._raise_if_failed()
        except BaseException:
            self._slots.release()
            raise
        task = Task(fn, args)
        with self._lock:
            self._tasks.append(task)
            if cleanup is not None:
                self._cleanups.append(cleanup)
        threading.Thread(target=self._run, args=(task,), name=f"{self.name}-{len(self._tasks)}",
                         daemon=True).start()
        return task

    def _run(self, task: Task) -> None:
        try:
            task.value = task.fn(*task.args)
        except BaseException as e:  # noqa: BLE001  (the group's failure, raised by results())
            task.error = e
            self.cancel(e)
        finally:
            self._slots.release()
            task.finished.set()

    def cancel(self, error: BaseException) -> None:
        """Fail the group with `error` (the first one counts); its cleanups run once, now."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = error
            cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup(error)

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every task submitted, at most `timeout` seconds; True when all finished."""
        ends = None if timeout is None else time.monotonic() + timeout
        for task in list(self._tasks):
            left = None if ends is None else max(0.0, ends - time.monotonic())
            if not task.finished.wait(left):
                return False
        return True

    def results(self) -> list[Any]:
        """Every task's value, in the order submitted, once all finished; the failure instead."""
        self.join()
        self._raise_if_failed()
        return [task.value for task in self._tasks]


def run_each(fn: Callable[[T], R], items: list[T], name: str, most: int) -> list[R]:
    """fn over items, `most` at a time; results in the items' order. The first failure is
    raised once the calls under way have ended (those not begun are dropped)."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    group = TaskGroup(name, most)
    try:
        for item in items:
            group.submit(fn, item)
    except BaseException:
        group.join()  # the failure stopped the submitting: let those under way end
        raise
    return group.results()
