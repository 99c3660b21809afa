"""The page-server receiver, spoken to as CRIU speaks (criu/page-xfer.c), and the bounded stream.

Real CRIU drives it end to end in tests/e2e; here a thread plays CRIU's side of the protocol on a
real socket, so each message, reply and failure can be checked on the host.
"""

from __future__ import annotations

import struct
import threading
import time

import pytest

from crikpy.criu.pageserver import ADD_F, CLOSE, OPEN2, PAGE, PE_PRESENT, PageReceiver
from crikpy.stores.base import Stream

HEADER = struct.Struct("=I4xQQQ")


class Recorder:
    def __init__(self, delay: float = 0.0):
        self.data, self.ended, self.delay = bytearray(), False, delay

    def write(self, data):
        time.sleep(self.delay)
        self.data += data

    def end(self):
        self.ended = True


def criu_side(sock, messages, replies):
    for cmd, nr, vaddr, dst, payload in messages:
        sock.sendall(HEADER.pack(cmd, nr, vaddr, dst) + payload)
        op = cmd & 0xFFFF
        if op == OPEN2:
            replies.append(sock.recv(1))
        elif op == CLOSE:
            replies.append(sock.recv(4))


def run(tmp_path, messages, streams, delay=0.0):
    pagemaps = {}
    receiver = PageReceiver(tmp_path, lambda name: streams.setdefault(name, Recorder(delay)),
                            write_pagemap=lambda path, image: pagemaps.__setitem__(path.name, image))
    receiver.start()
    replies = []
    criu_side(receiver.theirs, messages, replies)
    receiver.finish(timeout=10)
    return pagemaps, replies


def test_pages_stream_out_and_pagemaps_are_written_at_the_end(tmp_path):
    first, second = bytes(range(256)) * 16 * 3, b"\x07" * PAGE  # 3 pages, then 1
    messages = [
        (OPEN2, 0, 0, 100 << 8 | 1, b""),
        (ADD_F | PE_PRESENT << 16, 3, 0x1000, 100 << 8 | 1, first),
        (ADD_F, 5, 0x9000, 100 << 8 | 1, b""),  # not present (zero pages): no bytes follow
        (OPEN2, 0, 0, 7 << 8 | 2, b""),  # shared memory
        (ADD_F | PE_PRESENT << 16, 1, 0x0, 7 << 8 | 2, second),
        (CLOSE, 0, 0, 0, b""),
    ]
    streams = {}
    pagemaps, replies = run(tmp_path, messages, streams)
    assert replies == [b"\0", b"\0", struct.pack("=i", 0)]
    assert bytes(streams["pages-1.img"].data) == first and streams["pages-1.img"].ended
    assert bytes(streams["pages-2.img"].data) == second and streams["pages-2.img"].ended
    assert pagemaps["pagemap-100.img"]["entries"] == [
        {"pages_id": 1},
        {"vaddr": 0x1000, "compat_nr_pages": 0, "flags": PE_PRESENT, "nr_pages": 3},
        {"vaddr": 0x9000, "compat_nr_pages": 0, "flags": 0, "nr_pages": 5}]
    assert pagemaps["pagemap-shmem-7.img"]["entries"][0] == {"pages_id": 2}


def test_criu_hanging_up_mid_pages_is_an_error_not_a_hang(tmp_path):
    receiver = PageReceiver(tmp_path, lambda name: Recorder())
    receiver.start()
    receiver.theirs.sendall(HEADER.pack(OPEN2, 0, 0, 1 << 8 | 1))
    receiver.theirs.recv(1)
    receiver.theirs.sendall(HEADER.pack(ADD_F | PE_PRESENT << 16, 4, 0, 1 << 8 | 1) + b"x" * 10)
    with pytest.raises(ConnectionError):
        receiver.finish(timeout=5)


def test_stream_holds_at_most_its_limit_and_reads_like_a_file():
    stream = Stream("pages-1.img", limit=4 * PAGE)
    written = []

    def producer():
        for i in range(16):
            stream.write(bytes([i]) * PAGE)
            written.append(i)
        stream.end()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.2)
    assert len(written) <= 4, "the producer ran ahead of the limit"
    out = b""
    while chunk := stream.read(3 * PAGE):  # whole reads until the end, as a file gives
        assert len(chunk) == 3 * PAGE or not stream._chunks
        out += chunk
    thread.join()
    assert out == b"".join(bytes([i]) * PAGE for i in range(16))


def test_a_failed_stream_wakes_its_blocked_writer():
    stream = Stream("pages-1.img", limit=PAGE)
    stream.write(b"x" * PAGE)
    errors = []

    def producer():
        try:
            stream.write(b"y" * PAGE)  # blocks: the store is behind
        except RuntimeError as e:
            errors.append(e)

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.1)
    stream.fail(RuntimeError("the upload failed"))
    thread.join(timeout=5)
    assert not thread.is_alive() and errors


def test_a_read_larger_than_the_limit_returns_whole_parts():
    """An S3 part (--s3-part-size, at least 5 MiB) is larger than the stream's bound: the read
    takes bytes as they come, so the writer is never stuck, and returns a whole part, because
    S3 refuses parts under 5 MiB but the last."""
    stream = Stream("pages-1.img", limit=2 * PAGE)

    def producer():
        for _ in range(11):
            stream.write(b"z" * PAGE)
        stream.end()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    got = []
    reader = threading.Thread(target=lambda: got.extend(iter(lambda: stream.read(5 * PAGE), b"")),
                              daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "read(n > limit) waited forever"
    assert [len(part) for part in got] == [5 * PAGE, 5 * PAGE, PAGE]
    assert b"".join(got) == b"z" * 11 * PAGE
