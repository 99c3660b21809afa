"""Reading the small files an operator hands crikpy: the config, the key file, S3 credentials.

Only regular files, and only so much of them: a FIFO or a device given by mistake must not
hang PID 1 or fill its memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_BYTES = 1024 * 1024


class UnfitFile(ValueError):
    """Not a regular file, or larger than such a file may be; the message completes "PATH ..."."""


def read_small(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; OSError or UnfitFile otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO's open must not wait
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnfitFile(f"is a {kind(st.st_mode)}, not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UnfitFile(f"is larger than the {limit} bytes such a file may have")
        return b"".join(chunks)
    finally:
        os.close(fd)


def kind(mode: int) -> str:
    """What a file that is not a regular file is, for an error: `FIFO`, `socket`, ..."""
    return ("directory" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode)
            else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")
