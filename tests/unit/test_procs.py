"""crikpy.procs against this machine's real /proc."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time

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

