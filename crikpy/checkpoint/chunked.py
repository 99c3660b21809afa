"""A stream transformed chunk by chunk and read as a file: what sealing and compression share.

`TransformedReader` reads fixed-size chunks from a plaintext reader, hands each to
`transform(index, chunk, last)` and serves the results to whoever reads it (a store's upload,
in parts of any size). One chunk is read ahead, because whether a chunk is the last one is known
only when the next read comes back empty; an empty plaintext is one empty chunk, flagged last.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

Transform = Callable[[int, bytes, bool], bytes]


class TransformedReader:
    def __init__(self, plain: BinaryIO, chunk: int, transform: Transform,
                 prefix: bytes = b"") -> None:
        self._plain, self._chunk, self._transform = plain, chunk, transform
        self._next = 0
        self._ahead: bytes | None = plain.read(chunk)
        self._pending, self._offset = prefix, 0  # transformed bytes not yet read

    def read(self, n: int = -1) -> bytes:
        pieces, want = [], n
        while want != 0 and self._advance():
            take = len(self._pending) - self._offset
            if want > 0:
                take = min(take, want)
                want -= take
            pieces.append(memoryview(self._pending)[self._offset:self._offset + take])
            self._offset += take
        return b"".join(pieces)

    def readinto(self, buffer) -> int:
        """Fill `buffer` as far as the stream goes: an upload's reused part buffer."""
        view, got = memoryview(buffer), 0
        while got < len(view) and self._advance():
            take = min(len(self._pending) - self._offset, len(view) - got)
            view[got:got + take] = memoryview(self._pending)[self._offset:self._offset + take]
            self._offset += take
            got += take
        return got

    def _advance(self) -> bool:
        """Make sure transformed bytes are pending; False at the end."""
        if self._offset == len(self._pending):
            if self._ahead is None:
                return False
            chunk, self._ahead = self._ahead, self._plain.read(self._chunk)
            last = not self._ahead
            self._pending = self._transform(self._next, chunk, last)
            self._offset, self._next = 0, self._next + 1
            if last:
                self._ahead = None
        return True

    def close(self) -> None:
        self._plain.close()

    def __enter__(self) -> "TransformedReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
