"""Compressed pages: zstd frames on the way to the store, undone on the way back.

Through a real file store and repository, as a dump streams them: plain and sealed, memory that
compresses and memory that does not, and damage that must be caught.
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crikpy.checkpoint import framed
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.tasks import TaskGroup
from crikpy.checkpoint.keys import KeyRing
from crikpy.checkpoint.manifest import new_id
from crikpy.errors import CorruptCheckpoint
from crikpy.stores import open_store
from tests.helpers import sample_info

MIB = 1024 * 1024


def heap(mib: float, compressible: bool) -> bytes:
    size = int(mib * MIB)
    if not compressible:
        return os.urandom(size)
    words = b"".join(f"key:{i} value:{i * 7919 % 10007};".encode() for i in range(size // 20))
    return words[:size]


def stream_through(tmp_path, data: bytes, keys=None, compress=True):
    """Commit `data` as a streamed pages image, fetch it back; (manifest, data back, stored)."""
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "ns/app", keys=keys)
    ckpt_id = new_id()
    upload = repo.open_upload(ckpt_id, "images/pages-1.img", None, TaskGroup("upload"),
                              compress=compress)
    for at in range(0, len(data), 300_000):  # in pieces, as CRIU's pages come
        upload.write(data[at:at + 300_000])
    upload.end()
    staging = tmp_path / f"staging-{ckpt_id}"
    (staging / "images").mkdir(parents=True)
    (staging / "images" / "pstree.img").write_bytes(b"tree")
    manifest = repo.commit(staging, ckpt_id, sample_info(), streamed=[upload])
    dest = tmp_path / f"restore-{ckpt_id}"
    repo.fetch(manifest, dest)
    stored = store.root / "ns" / "app" / "checkpoints" / ckpt_id / "files" / "images" / "pages-1.img"
    return manifest, (dest / "images" / "pages-1.img").read_bytes(), stored


@pytest.mark.parametrize("keys", [None, KeyRing((b"k" * 32,))], ids=["plain", "sealed"])
@pytest.mark.parametrize("compressible", [True, False], ids=["text heap", "random heap"])
def test_pages_round_trip(tmp_path, keys, compressible):
    data = heap(5.5, compressible)
    manifest, back, stored = stream_through(tmp_path, data, keys)
    assert back == data
    entry = next(f for f in manifest.files if f.path == "images/pages-1.img")
    assert entry.codec == framed.CODEC and entry.size == stored.stat().st_size
    if compressible:
        assert entry.size <= 0.4 * len(data), f"stored {entry.size / len(data):.0%}"
    else:  # nothing gained, and almost nothing lost: 5 bytes a frame, 16 a sealed chunk
        assert entry.size <= len(data) + 6 * 5 + (6 * 16 + 48 if keys else 0)


@pytest.mark.parametrize("size", [0, 1, framed.FRAME, framed.FRAME + 1])
def test_frame_boundaries(tmp_path, size):
    data = heap(size / MIB, True) if size else b""
    assert stream_through(tmp_path, data)[1] == data


def test_compression_off_stores_the_bytes_as_they_are(tmp_path):
    data = heap(1.5, True)
    manifest, back, stored = stream_through(tmp_path, data, compress=False)
    assert back == data and stored.read_bytes() == data
    assert all(f.codec is None for f in manifest.files)
    assert b'"codec"' not in manifest.to_json()


@pytest.mark.parametrize("damage", [
    lambda b: b[:-10],  # truncated inside the last frame
    lambda b: b[:5 + 100] + bytes([b[105] ^ 0xFF]) + b[106:],  # a flipped byte in a payload
    lambda b: (2 * framed.FRAME + 1).to_bytes(4, "little") + b[4:],  # an absurd frame length
], ids=["truncated", "flipped", "bad length"])
def test_damaged_frames_are_a_corrupt_checkpoint(tmp_path, damage):
    data = heap(2.5, True)
    store = open_store(f"file://{tmp_path / 'store'}")
    manifest, _, stored = stream_through(tmp_path, data)
    stored.write_bytes(damage(stored.read_bytes()))
    repo = CheckpointRepository(store, "ns/app")
    with pytest.raises(CorruptCheckpoint):
        repo.fetch(manifest, tmp_path / "again")


def test_a_truncated_sealed_and_compressed_object_says_authentication_failed(tmp_path):
    """The sealed layer names the fault; the decompressor below must not mask it."""
    keys = KeyRing((b"k" * 32,))
    store = open_store(f"file://{tmp_path / 'store'}")
    manifest, _, stored = stream_through(tmp_path, heap(2.5, True), keys)
    stored.write_bytes(stored.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpoint, match="^authentication failed"):
        CheckpointRepository(store, "ns/app", keys=keys).fetch(manifest, tmp_path / "again")


class _Collected:
    path = "collected"

    def __init__(self) -> None:
        self.data = bytearray()

    def open(self):
        return self

    def write(self, data) -> int:
        self.data += data
        return len(data)

    def close(self) -> None:
        pass


def _framed(data: bytes) -> bytes:
    class Plain:
        path = "plain"

        def open(self):
            return io.BytesIO(data)
    with framed.Compressed(Plain()).open() as reader:
        return reader.read()


_MIXED = heap(1.25, True) + heap(1.5, False) + heap(0.3, True)  # zstd, raw and short frames
_MIXED_FRAMED = _framed(_MIXED)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, len(_MIXED_FRAMED)), max_size=12))
def test_frames_come_out_whole_however_the_download_cuts_them(cuts):
    """A download writes in parts of any size; frames may straddle them anywhere, even in their
    5-byte head."""
    out = _Collected()
    with framed.Decompressed(out, "test").open() as sink:
        bounds = sorted({0, *cuts, len(_MIXED_FRAMED)})
        for start, end in zip(bounds, bounds[1:]):
            sink.write(_MIXED_FRAMED[start:end])
    assert bytes(out.data) == _MIXED


@settings(max_examples=30, deadline=None)
@given(end=st.integers(0, len(_MIXED_FRAMED) - 1), cut=st.integers(1, 3 * MIB))
def test_any_truncation_is_a_corrupt_checkpoint(end, cut):
    sink = framed.Decompressed(_Collected(), "test").open()
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        for at in range(0, end, cut):
            sink.write(_MIXED_FRAMED[at:min(at + cut, end)])
        sink.close()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 3 * MIB), min_size=1, max_size=8))
def test_an_upload_filling_its_part_buffers_reads_the_same_bytes(sizes):
    """An S3 upload fills reused part buffers (readinto) instead of reading new blocks."""
    class Plain:
        path = "plain"

        def open(self):
            return io.BytesIO(_MIXED)
    reader, out, at = framed.Compressed(Plain()).open(), bytearray(), 0
    while True:
        buffer = bytearray(sizes[at % len(sizes)])
        n = reader.readinto(buffer)
        if not n:
            break
        out += buffer[:n]
        at += 1
    assert bytes(out) == _MIXED_FRAMED
