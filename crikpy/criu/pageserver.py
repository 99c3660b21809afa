"""The receiving end of CRIU's page-server protocol: a dump's pages, streamed as they come.

`criu dump` with `ps.fd` (swrk mode) sends every page of the tree over a socket that crikpy
holds, instead of writing pages-*.img to the images dir. Each message starts with a 32-byte
`page_server_iov` header (criu/page-xfer.c): u32 cmd (low 16 bits the command, high 16 the
PE_* flags), 4 bytes of padding, u64 nr_pages, u64 vaddr, u64 dst_id (id << 8 | type; type 1 a
task's pagemap, 2 shared memory). Host byte order.

    OPEN2        a new pagemap begins: reply 1 byte, has_parent (always 0 here)
    PARENT       reply int32 0
    ADD_F        one pagemap entry; with PE_PRESENT, nr_pages x 4096 bytes of pages follow
    CLOSE, FORCE_CLOSE   the end: reply int32 0

Each pagemap's pages go to `open_pages(name)` (a writable stream: in crikpy, an upload) as they
arrive, 1 MiB at a time, and its pagemap image is written to the images dir at the end, as
`criu page-server` would. CRIU waits while the stream does, so memory and disk stay bounded.
A failure closes the socket, so CRIU fails the dump and lets the tree run on.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Callable, Protocol

from crikpy import log
from crikpy.tasks import TaskGroup

_HEADER = struct.Struct("=I4xQQQ")
OPEN2, PARENT, ADD_F, CLOSE, FORCE_CLOSE = 4, 5, 6, 0x1023, 0x1024
PE_PRESENT = 4
PAGE = 4096
_PIECE = 1024 * 1024  # pages are handed on in pieces of this size
_TASK, _SHMEM = 1, 2

_log = log.get("crikpy.criu")


class PagesStream(Protocol):
    def write(self, data: bytes) -> None: ...

    def end(self) -> None: ...


class PageReceiver:
    """Runs as a task of its own for one dump; `theirs` is CRIU's end of the socket, for
    `ps.fd`."""

    def __init__(self, images: Path, open_pages: Callable[[str], PagesStream],
                 write_pagemap: Callable[[Path, dict], None] | None = None) -> None:
        """`write_pagemap(path, image)` writes one pagemap image (default: pycriu's encoder)."""
        self._images, self._open_pages = images, open_pages
        self._write_pagemap = write_pagemap or _write_with_pycriu
        self._ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._maps: dict[int, dict] = {}
        self._current: PagesStream | None = None
        self.error: BaseException | None = None
        self.bytes = 0
        self._group = TaskGroup("page-receiver", 1)

    def start(self) -> "PageReceiver":
        self._group.submit(self._run)
        return self

    def finish(self, timeout: float | None = None) -> None:
        """After CRIU returned: wait for the end, write the pagemaps; raises what went wrong."""
        self.theirs.close()
        if not self._group.join(timeout):
            self._ours.close()
            raise RuntimeError("the page receiver did not finish after CRIU did")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001  (handed to finish(); CRIU sees the socket close)
            self.error = e
            for stream in (m["stream"] for m in self._maps.values()):
                fail = getattr(stream, "fail", None)
                if fail:
                    fail(e)
        finally:
            self._ours.close()

    def _serve(self) -> None:
        while True:
            header = self._receive(_HEADER.size)
            if header is None:
                raise ConnectionError("CRIU closed the page-server socket before CLOSE")
            cmd, nr_pages, vaddr, dst_id = _HEADER.unpack(header)
            op, flags = cmd & 0xFFFF, cmd >> 16
            if op == OPEN2:
                self._open(dst_id)
                self._ours.sendall(b"\0")
            elif op == PARENT:
                self._ours.sendall(struct.pack("=i", 0))
            elif op == ADD_F:
                self._add(dst_id, vaddr, nr_pages, flags)
            elif op in (CLOSE, FORCE_CLOSE):
                self._close_all()
                self._ours.sendall(struct.pack("=i", 0))
                return
            else:
                raise ValueError(f"page server: unknown command {op:#x} from CRIU")

    def _open(self, dst_id: int) -> None:
        if dst_id in self._maps:
            raise ValueError(f"page server: pagemap {dst_id:#x} opened twice")
        pages_id = len(self._maps) + 1
        if self._current is not None:
            self._current.end()  # CRIU is done with the previous pagemap
        self._current = self._open_pages(f"pages-{pages_id}.img")
        self._maps[dst_id] = {"pages_id": pages_id, "entries": [], "stream": self._current}

    def _add(self, dst_id: int, vaddr: int, nr_pages: int, flags: int) -> None:
        pagemap = self._maps.get(dst_id)
        if pagemap is None:
            raise ValueError(f"page server: pages for pagemap {dst_id:#x}, never opened")
        pagemap["entries"].append({"vaddr": vaddr, "compat_nr_pages": 0, "flags": flags,
                                   "nr_pages": nr_pages})
        if not flags & PE_PRESENT:
            return
        left = nr_pages * PAGE
        while left:
            piece = self._receive(min(left, _PIECE))
            if piece is None:
                raise ConnectionError("CRIU closed the page-server socket mid-pages")
            pagemap["stream"].write(piece)
            left -= len(piece)
            self.bytes += len(piece)

    def _close_all(self) -> None:
        if self._current is not None:
            self._current.end()
        for dst_id, pagemap in self._maps.items():
            kind, ident = dst_id & 0xFF, dst_id >> 8
            name = f"pagemap-{ident}.img" if kind == _TASK else f"pagemap-shmem-{ident}.img"
            self._write_pagemap(self._images / name, {
                "magic": "PAGEMAP",
                "entries": [{"pages_id": pagemap["pages_id"]}, *pagemap["entries"]]})
        _log.debug("page_server.closed", pagemaps=len(self._maps), bytes=self.bytes)

    def _receive(self, n: int) -> bytes | None:
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            k = self._ours.recv_into(view[got:], n - got)
            if k == 0:
                return None
            got += k
        return bytes(buffer)


def _write_with_pycriu(path: Path, image: dict) -> None:
    from crikpy.criu.session import images  # noqa: PLC0415  (pycriu, loaded with CRIU)

    with open(path, "wb") as f:
        images().dump(image, f)
