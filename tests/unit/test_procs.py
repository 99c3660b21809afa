"""crikpy.procs against this machine's real /proc."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

from crikpy import procs

IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


def test_sysv_semaphore_in_the_shared_ipc_namespace_is_found():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    semid = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
    assert semid >= 0, os.strerror(ctypes.get_errno())
    try:
        assert f"semaphore set {semid}" in procs.sysv_ipc_objects(os.getpid())
    finally:
        libc.semctl(semid, 0, IPC_RMID)
    assert f"semaphore set {semid}" not in procs.sysv_ipc_objects(os.getpid())


def test_a_tree_in_an_ipc_namespace_of_its_own_is_not_refused():
    # CRIU dumps such a namespace, SysV objects included, with the tree.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    semid = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
    assert semid >= 0, os.strerror(ctypes.get_errno())
    own = subprocess.Popen(["unshare", "--ipc", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{own.pid}/ns/ipc") == os.readlink("/proc/self/ns/ipc"):
            assert time.monotonic() < deadline, "unshare --ipc did not take effect"
            time.sleep(0.05)
        assert procs.sysv_ipc_objects(own.pid) == []
    finally:
        own.kill()
        own.wait()
        libc.semctl(semid, 0, IPC_RMID)


def test_a_process_of_another_user_is_named():
    other = subprocess.Popen(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                              "sleep", "30"])
    same = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while not all(s in open(f"/proc/{other.pid}/status").read()
                      for s in ("Uid:\t65534", "Name:\tsleep")):
            assert time.monotonic() < deadline, "setpriv did not take effect"
            time.sleep(0.05)
        assert procs.other_users(other.pid) == [f"process {other.pid} (sleep) runs as uid 65534 "
                                                "gid 65534"]
        assert procs.other_users(same.pid) == []
    finally:
        for p in (other, same):
            p.kill()
            p.wait()


def _child(code: str) -> subprocess.Popen:
    """A Python child that runs `code`, then says "ready" and waits to be killed."""
    child = subprocess.Popen([sys.executable, "-c", code + "\nprint('ready', flush=True)\n"
                              "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n", "the child failed"
    return child


def test_a_process_with_an_io_uring_is_named():
    child = _child("import ctypes\n"
                   "libc = ctypes.CDLL(None, use_errno=True)\n"
                   "params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed\n"
                   "fd = libc.syscall(425, 4, params)  # io_uring_setup, x86_64 and aarch64\n"
                   "assert fd >= 0, ctypes.get_errno()\n")
    plain = subprocess.Popen(["sleep", "30"])
    try:
        name = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert procs.io_uring_users(child.pid) == [f"process {child.pid} ({name})"]
        assert procs.io_uring_users(plain.pid) == []
    finally:
        for p in (child, plain):
            p.kill()
            p.wait()


# Terminals: CRIU restores a pseudo-terminal whose both ends are in the tree, never one whose
# other end (the container's terminal, /dev/console) is outside it.

def _holding_our_terminal(slave: int, *, as_controlling: bool) -> subprocess.Popen:
    """A child holding the slave end of a pty whose master this test (outside its tree) holds:
    on an fd above 2 with pipes on 0-2, or as its controlling terminal, with no fd left on it."""
    code = ("import fcntl, os, termios\n"
            + (f"fcntl.ioctl({slave}, termios.TIOCSCTTY, 0); os.close({slave})\n"
               if as_controlling else ""))
    child = subprocess.Popen([sys.executable, "-c", code + "print('ready', flush=True)\n"
                              "import time; time.sleep(60)"], pass_fds=(slave,),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    assert child.stdout.readline() == "ready\n", "the child failed"
    return child


def test_a_terminal_from_outside_the_tree_is_found_on_any_fd_or_as_controlling_terminal():
    import pty  # noqa: PLC0415
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    children = [_holding_our_terminal(slave, as_controlling=c) for c in (False, True)]
    try:
        on_fd, controlling = children
        assert procs.terminal_users(on_fd.pid) == [f"process {on_fd.pid} has {name} on fd {slave}"]
        assert procs.terminal_users(controlling.pid) == [
            f"process {controlling.pid} has a controlling terminal ({name}) from outside its tree"]
    finally:
        for p in children:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)


def test_a_pseudo_terminal_made_inside_the_tree_is_not_refused():
    """Both ends in the tree, as with script, tmux or expect: a pair held by one process, and
    a child whose controlling terminal's master its parent holds (pty.fork)."""
    pair = _child("import pty\nmaster, slave = pty.openpty()\n")
    session = _child("import pty, sys, time\n"
                     "pid, master = pty.fork()\n"
                     "if pid == 0:\n    time.sleep(60)\n"
                     "time.sleep(0.5)\n")
    try:
        assert procs.terminal_users(pair.pid) == []
        assert procs.terminal_users(session.pid) == []
    finally:
        for p in (pair, session):
            p.kill()
            p.wait()
