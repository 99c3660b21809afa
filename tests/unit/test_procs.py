"""crikpy.procs against this machine's real /proc."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
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


def test_a_mapped_jvm_perf_data_file_is_found():
    # What a JVM does at start: /tmp/hsperfdata_<user>/<pid>, mapped shared.
    perf_dir = tempfile.mkdtemp(prefix="hsperfdata_", dir="/tmp")
    try:
        child = _child("import mmap, os\n"
                       f"f = open(os.path.join({perf_dir!r}, str(os.getpid())), 'w+b')\n"
                       "f.truncate(4096)\n"
                       "m = mmap.mmap(f.fileno(), 4096)\n")
        try:
            assert procs.jvm_perf_data_files(child.pid) == [f"{perf_dir}/{child.pid}"]
        finally:
            child.kill()
            child.wait()
    finally:
        shutil.rmtree(perf_dir)
    assert procs.jvm_perf_data_files(os.getpid()) == []
