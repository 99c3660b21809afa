"""SysV shared memory and a SysV semaphore, through libc (ctypes).

Two processes share one segment: a counter and each process's tally. Each process, under the
semaphore, adds one to the counter and one to its own tally, and checks first that the counter
equals the sum of the tallies. It prints `sysv <pid> total=<counter> mine=<tally> ok|BROKEN`.
With SYSV_SHM=0 there is no segment: one process takes the semaphore around a counter of its own.
"""

import ctypes
import os
import sys
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
IPC_PRIVATE, IPC_CREAT, SEM_UNDO, SETVAL = 0, 0o1000, 0x1000, 16


class Sembuf(ctypes.Structure):
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                ("sem_flg", ctypes.c_short)]


def check(ret):
    if ret == -1 or ret is None:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


SHM = os.environ.get("SYSV_SHM", "1") != "0"
shmid = check(libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)) if SHM else -1
semid = check(libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600))
check(libc.semctl(semid, 0, SETVAL, ctypes.c_int(1)))
if SHM:
    addr = libc.shmat(shmid, None, 0)
    if addr == ctypes.c_void_p(-1).value:
        check(-1)
    cells = (ctypes.c_long * 3).from_address(addr)  # [counter, tally of slot 0, tally of slot 1]
else:
    cells = (ctypes.c_long * 3)()


def semop(op: int) -> None:
    buf = Sembuf(0, op, SEM_UNDO)
    while libc.semop(semid, ctypes.byref(buf), 1) == -1:
        if ctypes.get_errno() != 4:  # EINTR
            check(-1)


def run(slot: int) -> None:
    while True:
        semop(-1)
        ok = cells[0] == cells[1] + cells[2]
        cells[0] += 1
        cells[1 + slot] += 1
        total, mine = cells[0], cells[1 + slot]
        semop(1)
        print(f"sysv {os.getpid()} total={total} mine={mine} {'ok' if ok else 'BROKEN'}",
              flush=True)
        time.sleep(0.1)


print(f"sysv shmid={shmid} semid={semid}", flush=True)
if SHM and os.fork() == 0:
    run(1)
run(0)
