"""Run a command with io_uring denied to it: `python3 no-io-uring.py COMMAND [ARG...]`.

CRIU cannot dump an io_uring instance, and libuv 1.49+ (Node.js's event loop) makes one for
every loop whenever the kernel lets it, whatever UV_USE_IO_URING says. Under this seccomp filter
io_uring_setup fails with ENOSYS, as on a kernel without io_uring, and libuv falls back to plain
epoll. The filter is inherited by every child and carried by CRIU across a migration; CRIU can
dump a filtered process only when it holds CAP_SYS_ADMIN (a privileged container).
"""

import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
NR_IO_URING_SETUP = 425  # the same number on x86_64 and aarch64
ARCHES = (0xC000003E, 0xC00000B7)  # AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64
# Classic BPF over struct seccomp_data {int nr; u32 arch; ...}.
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


program = b"".join([
    insn(LD_W_ABS, 0, 0, 4),                     # arch
    insn(JEQ_K, 1, 0, ARCHES[0]),
    insn(JEQ_K, 0, 3, ARCHES[1]),                # another arch: allow everything
    insn(LD_W_ABS, 0, 0, 0),                     # syscall number
    insn(JEQ_K, 0, 1, NR_IO_URING_SETUP),
    insn(RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
    insn(RET_K, 0, 0, SECCOMP_RET_ALLOW),
])
code = ctypes.create_string_buffer(program)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


libc = ctypes.CDLL(None, use_errno=True)
fprog = SockFprog(len(program) // 8, ctypes.addressof(code))


def load_filter() -> bool:
    return libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


# Without CAP_SYS_ADMIN the kernel takes a filter only from a process with no_new_privs.
if not load_filter() and not (ctypes.get_errno() == errno.EACCES
                              and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                              and load_filter()):
    sys.exit(f"no-io-uring: cannot install the filter: {os.strerror(ctypes.get_errno())}")
os.execvp(sys.argv[1], sys.argv[1:])
