"""Taking the workload's TCP connections out of CRIU's repair mode after a dump.

CRIU dumps an established connection by switching its socket to repair mode, where the kernel
sends nothing for it, and leaves it so when the tree stays frozen (crikpy's final dumps). Left
that way, a tree resumed after a failed commit finds every connection answering EPERM, and a
tree killed after a committed one drops its connections silently: the peers never learn they
ended and keep whatever they tied to them (a lock, a transaction). So once the commit's fate is
known, each socket is switched back (through a copy of it taken with pidfd_getfd):
- the commit failed and the tree runs on: the connections work as before the dump;
- it committed and the tree is about to die: each is also set to reset when closed (SO_LINGER
  0), so its peer gets an RST at once and nothing lingers in FIN_WAIT holding the port, which a
  restore on the same host binds again.
A restore never brings the connections back (options.tcp_close), so nothing is lost by this.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

from crikpy import log, procs

_SYS_PIDFD_GETFD = 438  # one number on every architecture (Linux 5.6's unified table)
_TCP_REPAIR = 19

_log = log.get()


def leave_repair_mode(root: int, *, reset: bool = False) -> int:
    """Switch every TCP socket of the tree at `root` out of repair mode, set to reset its
    connection when closed if `reset`; returns how many were switched. Errors are logged, never
    raised: the dump itself stands either way."""
    libc = ctypes.CDLL(None, use_errno=True)
    switched, failed = 0, []
    for pid in procs.tree(root):
        sockets = [fd for fd, target in procs.fd_targets(pid) if target.startswith("socket:")]
        if not sockets:
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            failed.append(f"{pid}: {e.strerror}")
            continue
        try:
            for fd in sockets:
                mine = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
                if mine < 0:
                    failed.append(f"{pid} fd {fd}: {os.strerror(ctypes.get_errno())}")
                    continue
                try:
                    sock = socket.socket(fileno=mine)
                except OSError:
                    os.close(mine)
                    continue
                with sock:
                    if sock.type != socket.SOCK_STREAM or sock.family not in (
                            socket.AF_INET, socket.AF_INET6):
                        continue
                    try:
                        if reset:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
                        sock.setsockopt(socket.IPPROTO_TCP, _TCP_REPAIR, 0)
                        switched += 1
                    except OSError as e:
                        failed.append(f"{pid} fd {fd}: {e.strerror}")
        finally:
            os.close(pidfd)
    if failed:
        _log.warning("tcp.repair_mode_kept", sockets=failed[:10],
                     consequence="those connections stay silent until the workload ends")
    return switched
