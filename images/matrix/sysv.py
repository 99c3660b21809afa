"""SysV shared memory, a SysV semaphore and a SysV message queue, through libc (ctypes).

Two processes share one segment: a counter and each process's tally. Each process, under the
semaphore, adds one to the counter and one to its own tally, and checks first that the counter
equals the sum of the tallies and the one message waiting in the queue (the counter's value, left
there by the last turn). It prints `sysv <pid> total=<counter> mine=<tally> ok|BROKEN`.
With SYSV_SHM=0 there is no segment and no queue: one process takes the semaphore around a
counter of its own.
"""

import ctypes
import os
import sys
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
IPC_PRIVATE, IPC_CREAT, IPC_NOWAIT, SEM_UNDO, SETVAL = 0, 0o1000, 0o4000, 0x1000, 16


class Sembuf(ctypes.Structure):
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                ("sem_flg", ctypes.c_short)]


class Msgbuf(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_long)]


def check(ret):
    if ret == -1 or ret is None:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


SHM = os.environ.get("SYSV_SHM", "1") != "0"
shmid = check(libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)) if SHM else -1
semid = check(libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600))
msqid = check(libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)) if SHM else -1
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


def send(value: int) -> None:
    check(libc.msgsnd(msqid, ctypes.byref(Msgbuf(1, value)), ctypes.sizeof(ctypes.c_long), 0))


def receive() -> int:
    """The message waiting in the queue; -1 if there is none."""
    buf = Msgbuf()
    got = libc.msgrcv(msqid, ctypes.byref(buf), ctypes.sizeof(ctypes.c_long), 0, IPC_NOWAIT)
    return buf.mtext if got == ctypes.sizeof(ctypes.c_long) else -1


def run(slot: int) -> None:
    while True:
        semop(-1)
        ok = cells[0] == cells[1] + cells[2] and (not SHM or receive() == cells[0])
        cells[0] += 1
        if SHM:
            send(cells[0])
        cells[1 + slot] += 1
        total, mine = cells[0], cells[1 + slot]
        semop(1)
        print(f"sysv {os.getpid()} total={total} mine={mine} {'ok' if ok else 'BROKEN'}",
              flush=True)
        time.sleep(0.1)


print(f"sysv shmid={shmid} semid={semid} msqid={msqid}", flush=True)
if SHM:
    send(0)
if SHM and os.fork() == 0:
    run(1)
run(0)
