"""Linux process plumbing shared by the supervisor and CRIU driving.

The child-subreaper flag, the PID floor in `ns_last_pid`, signal masks for children, and walking
a process tree through /proc. Nothing here knows what a checkpoint is.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants so they are reaped here, as PID 1 would (needed when not PID 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def raise_pid_floor(floor: int) -> tuple[bool, str]:
    """Make new PIDs start above `floor`, so a workload's PIDs never collide with crikpy's own.

    A later restore recreates the workload's PIDs exactly; crikpy and CRIU, started first in the
    new container, take low PIDs. Returns (done, why-not).
    """
    try:
        current = int(NS_LAST_PID.read_text())
        if current < floor:
            NS_LAST_PID.write_text(str(floor))
        return True, ""
    except OSError as e:
        return False, f"{NS_LAST_PID}: {e.strerror}"


def unblock_signals() -> None:
    """For a child's preexec: the supervisor blocks signals to wait for them; children must not."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def close_inherited_fds() -> None:
    """Mark every fd above 2 close-on-exec, so children start without strays from our parent.

    A dumped process holding an fd of the host's mounts (a shell's leaked fd 10, say) cannot be
    checkpointed; CRIU fails with "Can't lookup mount".
    """
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the fd of the listing itself, closed by now


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def tree(root: int) -> list[int]:
    """`root` and all its descendants alive now, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_of(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    order, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        order.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return order


def signal_tree(root: int, sig: int) -> None:
    for pid in tree(root):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stdio_targets(pid: int) -> dict[str, str]:
    """What fds 0-2 of `pid` point at (`pipe:[123]`, `/dev/null`, ...), for reattaching them."""
    targets = {}
    for fd in (0, 1, 2):
        try:
            targets[str(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return targets
