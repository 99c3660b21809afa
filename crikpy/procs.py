"""Linux process plumbing shared by the supervisor and CRIU driving.

The child-subreaper flag, the PID floor in `ns_last_pid`, signal masks for children, how malloc
gives memory back, and walking a process tree through /proc. Nothing here knows what a
checkpoint is.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import time
from pathlib import Path

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
_PR_SET_CHILD_SUBREAPER = 36
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
BIG_ALLOCATION = 4 * 1024 * 1024


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants so they are reaped here, as PID 1 would (needed when not PID 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def give_big_buffers_back() -> None:
    """Make glibc return freed transfer buffers (1 MiB chunks, 8 MiB parts) to the kernel.

    By default glibc raises its mmap threshold to the size of each large block freed, up to
    32 MiB, after which such blocks come from per-thread arenas that keep them when freed: with
    a few transfer threads, crikpy's resident memory grew to several times what it ever held at
    once. A fixed threshold (which also fixes the trim threshold) and few arenas keep resident
    memory close to what is in use.
    """
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, BIG_ALLOCATION)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * BIG_ALLOCATION)
    libc.mallopt(_M_ARENA_MAX, 2)


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


# rt_sigaction's number, by machine: glibc's sigaction() refuses its own signals 32 and 33.
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}


def default_all_signals() -> None:
    """Give every signal its default disposition, glibc's internal 32 and 33 included.

    For a child between fork and exec: an ignored signal survives exec, and CRIU carries it on
    into every restored generation.
    """
    number = _SYS_RT_SIGACTION.get(os.uname().machine)
    if number is None:  # another machine: what Python can reach
        for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            signal.signal(sig, signal.SIG_DFL)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    default = (ctypes.c_ulong * 4)()  # {handler SIG_DFL, flags, restorer, mask}: all zero
    for sig in range(1, 65):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            libc.syscall(number, sig, ctypes.byref(default), None, 8)


def unblock_signals() -> None:
    """For a child's preexec: the supervisor blocks signals to wait for them; children must not."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


CLONE_NEWIPC = 0x08000000
# The sysctls an IPC namespace has of its own. A pod's sysctls (kernel.shmmax, fs.mqueue.msg_max,
# ...) are set in the pod's namespace; a new one starts from the kernel's defaults.
IPC_SYSCTLS = ("kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced",
               "kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/sem",
               "fs/mqueue/queues_max", "fs/mqueue/msg_max", "fs/mqueue/msgsize_max",
               "fs/mqueue/msg_default", "fs/mqueue/msgsize_default")


def ipc_sysctls() -> dict[str, str]:
    """This IPC namespace's sysctls, for `enter_new_ipc_namespace` to carry over."""
    values = {}
    for name in IPC_SYSCTLS:
        try:
            values[name] = Path(f"/proc/sys/{name}").read_text()
        except OSError:
            pass  # an older kernel without it
    return values


def enter_new_ipc_namespace(sysctls: dict[str, str]) -> tuple[bool, list[str]]:
    """For a child between fork and exec: move into a new IPC namespace, with the `sysctls` of
    the one it leaves (from `ipc_sysctls`, read before the fork). Returns (entered, problems).

    CRIU carries SysV IPC only with an IPC namespace of the tree's own, one that CRIU (started
    by crikpy, in crikpy's) does not share. Needs CAP_SYS_ADMIN.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWIPC) != 0:
        return False, [f"unshare(CLONE_NEWIPC) failed: {os.strerror(ctypes.get_errno())}"]
    problems = []
    for name, value in sysctls.items():
        path = f"/proc/sys/{name}"
        try:
            with open(path) as f:
                if f.read() == value:
                    continue
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            problems.append(f"{name.replace('/', '.')} stays at the kernel's default, not "
                            f"{' '.join(value.split())}: {e.strerror}")
    return True, problems


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


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def terminal_users(root: int) -> list[str]:
    """Processes of the tree at `root` holding a terminal from outside the tree: a controlling
    terminal, or a terminal on any fd, that is not the slave end of a pseudo-terminal whose
    master the tree holds. CRIU restores a pair made inside the tree (script, tmux, expect),
    but not the container's terminal (`podman run -t`, /dev/console): "No task found with sid"."""
    pids = tree(root)
    inside = {index for pid in pids for index in _pty_masters(pid)}
    found = []
    for pid in pids:
        fields = _stat_fields(pid)
        tty_nr = int(fields[4]) if fields else 0
        if tty_nr and _pts_index(tty_nr) not in inside:
            found.append(f"process {pid} has a controlling terminal "
                         f"({_terminal_name(tty_nr)}) from outside its tree")
            continue
        for fd, target in fd_targets(pid):
            pts = target.removeprefix("/dev/pts/")
            if pts.isdigit() and int(pts) in inside:
                continue
            if target.startswith(("/dev/pts/", "/dev/tty", "/dev/console")) and \
                    target != "/dev/pts/ptmx":
                found.append(f"process {pid} has {target} on fd {fd}")
                break
    return found


def fd_targets(pid: int) -> list[tuple[int, str]]:
    """Every open fd of `pid` and what it points at, lowest first."""
    try:
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append((fd, os.readlink(f"/proc/{pid}/fd/{fd}")))
        except OSError:
            pass  # closed meanwhile
    return targets


def _pty_masters(pid: int) -> list[int]:
    """The indexes of the pseudo-terminals whose master `pid` holds (their fdinfo says)."""
    indexes = []
    for fd, target in fd_targets(pid):
        if target not in ("/dev/ptmx", "/dev/pts/ptmx"):
            continue
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key == "tty-index" and value.strip().isdigit():
                indexes.append(int(value))
    return indexes


_PTS_MAJORS = range(136, 144)  # Unix98 pseudo-terminal slaves (devices.txt)


def _tty_device(tty_nr: int) -> tuple[int, int]:
    return (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)


def _pts_index(tty_nr: int) -> int | None:
    major, minor = _tty_device(tty_nr)
    return (major - 136) * 256 + minor if major in _PTS_MAJORS else None


def _terminal_name(tty_nr: int) -> str:
    index = _pts_index(tty_nr)
    if index is not None:
        return f"/dev/pts/{index}"
    major, minor = _tty_device(tty_nr)
    return {(5, 1): "/dev/console"}.get((major, minor), f"device {major}:{minor}")


def sysv_ipc_objects(root: int) -> list[str]:
    """SysV IPC objects (shared memory, semaphores, message queues) in the IPC namespace that the
    tree at `root` shares with crikpy. CRIU carries SysV IPC only with an IPC namespace of the
    tree's own, so these would be missing after a restore: a semaphore's id answers EINVAL there,
    and CRIU refuses an attached segment only deep in the dump."""
    try:
        if os.readlink(f"/proc/{root}/ns/ipc") != os.readlink("/proc/self/ns/ipc"):
            return []
    except OSError:
        return []
    found = []
    for kind, label in (("shm", "shared memory segment"), ("sem", "semaphore set"),
                        ("msg", "message queue")):
        try:
            rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        found += [f"{label} {row.split()[1]}" for row in rows if row.split()]
    return found


CAP_SYS_RESOURCE = 24


def status_field(name: str) -> str | None:
    """The first word of field `name` in crikpy's own /proc/self/status, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split()[1]
    except OSError:
        pass
    return None


def effective_capabilities() -> int | None:
    """crikpy's effective capability bits (CRIU, its child, gets the same), or None unknown."""
    caps = status_field("CapEff")
    return None if caps is None else int(caps, 16)


def lacks_sys_resource() -> bool:
    """Whether crikpy (and so CRIU, its child) lacks CAP_SYS_RESOURCE."""
    caps = effective_capabilities()
    return caps is not None and not caps >> CAP_SYS_RESOURCE & 1


def other_users(root: int) -> list[str]:
    """Processes of the tree at `root` whose real, effective or saved uid or gid is not crikpy's.
    Without CAP_SYS_RESOURCE, CRIU cannot read their resource limits (prlimit: EPERM), so it
    cannot dump them ("Can't get rlimit")."""
    found = []
    for pid in tree(root):
        ids = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("Name:", "Uid:", "Gid:")):
                        key, *values = line.split()
                        ids[key] = values
        except OSError:
            continue
        uids = {int(v) for v in ids.get("Uid:", [])[:3]}
        gids = {int(v) for v in ids.get("Gid:", [])[:3]}
        if uids - {os.getuid()} or gids - {os.getgid()}:
            found.append(f"process {pid} ({' '.join(ids.get('Name:', ['?']))}) runs as uid "
                         f"{max(uids - {os.getuid()}, default=os.getuid())} gid "
                         f"{max(gids - {os.getgid()}, default=os.getgid())}")
    return found


IO_URING = "anon_inode:[io_uring]"


def io_uring_users(root: int) -> list[str]:
    """Processes of the tree at `root` with an io_uring instance, as an fd or a mapping. CRIU
    cannot dump one: the dump fails with "Unknown shit 600 (anon_inode:[io_uring])"."""
    found = []
    for pid in tree(root):
        try:
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue  # gone, or an fd closed while listing: the dump sees it as it is then
        if IO_URING in fds or IO_URING in maps:
            found.append(f"process {pid} ({_name(pid)})")
    return found


# HotSpot's perf data file: /tmp/hsperfdata_<user>/<pid>, mapped shared for jstat and jcmd.
_HSPERFDATA = re.compile(r" (/tmp/hsperfdata_[^/\s]+/\d+)$", re.MULTILINE)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


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


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _name(pid)
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or _name(pid)


def outside_tree(root: int) -> list[int]:
    """crikpy's descendants outside `root`'s tree: what a checkpoint of the tree leaves behind
    (a daemon the workload double-forked away, adopted by crikpy as PID 1 or subreaper)."""
    inside = set(tree(root)) | {os.getpid()}
    return [p for p in tree(os.getpid()) if p not in inside]


def open_files_needed(root: int) -> int:
    """The most descriptors a restore of the tree opens at once in one process: its own open
    files and one for each shared mapping, which CRIU restores through a descriptor."""
    most = 0
    for pid in tree(root):
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/maps") as f:
                shared = sum(1 for line in f if line.split(maxsplit=2)[1][3] == "s")
        except (OSError, IndexError):
            continue
        most = max(most, fds + shared)
    return most


def open_file_limit() -> int | None:
    """The hard RLIMIT_NOFILE here: the most any process of this container, CRIU's restore
    included, may ever raise its own limit to."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def reap_dead_children(wait_seconds: float = 2.0) -> list[int]:
    """Reap the children that end within `wait_seconds` (a failed restore's root, which CRIU
    has killed but cannot reap: it is ours); returns at once when no child is left."""
    reaped, until = [], time.monotonic() + wait_seconds
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped.append(pid)
        elif time.monotonic() >= until:
            return reaped
        else:
            time.sleep(0.02)
