"""Compressed objects: zstd, 1 MiB of plaintext per frame, streaming both ways.

    frame  u32 little-endian: payload length | u8 flags (1: zstd-compressed, 2: last) | payload

A frame whose compressed form would not be at least 3 % smaller is stored raw. Incompressible
memory (random data, already-compressed data) is detected by compressing only each MiB's first
64 KiB: when that probe does not shrink, the MiB goes out raw, so it costs 1/16 of a try. The
manifest, never the object, says that a file is framed (a workload's own memory could start
with any bytes). When a key is set, the framed bytes are what gets sealed:
compression first, then encryption. docs/format.md specifies it.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from crikpy.checkpoint.chunked import TransformedReader
from crikpy.errors import CorruptCheckpoint

CODEC = "zstd-frames-v1"
FRAME = 1024 * 1024
LEVEL = 1  # zstd's fastest: on this project's measurements ~3x faster than level 3 for ~15 % less
_HEAD = struct.Struct("<IB")
_ZSTD, _LAST = 1, 2
_WORTH = 0.97  # keep the compressed form only when it saves at least 3 %
_PROBE = 64 * 1024  # a MiB whose first 64 KiB do not shrink is stored raw, untried


def _zstd():
    import zstandard  # noqa: PLC0415  (loaded only when something is compressed)

    return zstandard


class Compressed:
    """A store's upload source: the framed, compressed bytes of another source (size unknown)."""

    size = None

    def __init__(self, plain) -> None:
        self._plain = plain
        self.path = plain.path

    def open(self) -> BinaryIO:
        return TransformedReader(self._plain.open(), FRAME, _Framer().frame)


class _Framer:
    def __init__(self) -> None:
        self._compressor = _zstd().ZstdCompressor(level=LEVEL)

    def frame(self, index: int, chunk: bytes, last: bool) -> bytes:
        flags = _LAST if last else 0
        probe = chunk[:_PROBE]
        if len(chunk) > _PROBE and len(self._compressor.compress(probe)) >= _WORTH * len(probe):
            return _HEAD.pack(len(chunk), flags) + chunk  # random-looking: not worth a full try
        packed = self._compressor.compress(chunk)
        if len(packed) < _WORTH * len(chunk):
            return _HEAD.pack(len(packed), flags | _ZSTD) + packed
        return _HEAD.pack(len(chunk), flags) + chunk


class Decompressed:
    """A store's download sink: framed bytes in, plaintext out to another sink."""

    def __init__(self, sink, where: str) -> None:
        self._sink, self.path, self._where = sink, sink.path, where

    def open(self):
        return _Decompressing(self._sink.open(), self._where)


class _Decompressing:
    """Writable: frames are cut out of each write in place. Only a frame that a write ends in
    the middle of is copied and kept, so a download's parts (8 MiB) are never copied whole."""

    def __init__(self, target, where: str) -> None:
        self._target, self._where = target, where
        self._decompressor = _zstd().ZstdDecompressor()
        self._held = bytearray()  # the start of a frame that the last write cut
        self._ended = False

    def write(self, data) -> int:
        view = memoryview(data)
        if self._held:
            view = self._complete_held(view)
            if self._held:  # still cut: this write ended inside it
                return len(data)
        at = 0
        while (length := self._frame_length(view, at)) is not None and at + length <= len(view):
            self._emit(view[at:at + length])
            at += length
        self._held = bytearray(view[at:])
        return len(data)

    def _complete_held(self, view: memoryview) -> memoryview:
        """Add to the held frame what it lacks from `view`; the rest of `view` is returned."""
        while view:
            length = self._frame_length(self._held, 0)
            wanted = (length if length is not None else _HEAD.size) - len(self._held)
            self._held += view[:wanted]
            view = view[wanted:]
            if length is not None and len(self._held) == length:
                self._emit(memoryview(self._held))
                self._held = bytearray()
                break
        return view

    def _frame_length(self, buffer, at: int) -> int | None:
        """The whole length of the frame at `at`, or None when its head is not all there."""
        if len(buffer) - at < _HEAD.size:
            return None
        length, _ = _HEAD.unpack_from(buffer, at)
        if length > 2 * FRAME or self._ended:
            raise CorruptCheckpoint(f"{self._where}: a compressed frame is malformed")
        return _HEAD.size + length

    def _emit(self, frame: memoryview) -> None:
        _, flags = _HEAD.unpack_from(frame)
        self._target.write(self._open(frame[_HEAD.size:], flags))
        self._ended = bool(flags & _LAST)

    def _open(self, payload, flags: int) -> bytes:
        if not flags & _ZSTD:
            return payload
        try:
            plain = self._decompressor.decompress(payload, max_output_size=FRAME)
        except _zstd().ZstdError as e:
            raise CorruptCheckpoint(f"{self._where}: a compressed frame does not "
                                    f"decompress ({e})") from None
        if len(plain) > FRAME:
            raise CorruptCheckpoint(f"{self._where}: a compressed frame is too large")
        return plain

    def close(self) -> None:
        try:
            if self._held or not self._ended:
                raise CorruptCheckpoint(f"{self._where}: the compressed object is truncated")
        finally:
            self._target.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._target.close()
