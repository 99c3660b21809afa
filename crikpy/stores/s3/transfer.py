"""Large objects: files above one part go up as multipart uploads and come down as ranged GETs,
parts in parallel, without holding a checkpoint in memory.

One budget of `concurrency` parts, shared by every transfer of the store (several files may move
at once during a dump), bounds the checkpoint bytes in RAM to concurrency x part size: a part
takes a slot before it is read (upload) or requested (download) and gives it back once sent or
written. One pool of `concurrency` threads moves the parts of every transfer. The sha256 is
computed in order as the bytes pass, so there is no second read. A failed multipart upload is
aborted before put_file returns, once none of its parts is on the wire any more (each attempt
ends by the deadline, see calls), so that no part lands after the abort; what the abort misses,
`sweep` aborts at a later commit.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import botocore.exceptions

from crikpy.deadline import Deadline
from crikpy.errors import StoreError
from crikpy.stores.base import CHUNK, Digest, Progress, Sink, Source
from crikpy.stores.s3.calls import WAIT_SLICE, Calls
from crikpy.stores.s3.options import S3Options


class Transfers:
    """The large-object transfers of one store, and the part budget and threads they share."""

    def __init__(self, client, bucket: str, options: S3Options, call: Calls) -> None:
        self._client, self.bucket, self.options, self._call = client, bucket, options, call
        self.parts = threading.BoundedSemaphore(options.concurrency)  # the memory budget
        self._part_buffers = _PartBuffers(options.part_size, options.concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _part_pool(self) -> ThreadPoolExecutor:
        """The threads that move parts, for every transfer: started at the first one."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.options.concurrency,
                                                thread_name_prefix="s3-part")
            return self._pool

    def _part_done(self, buffer: bytearray) -> None:
        self._part_buffers.give_back(buffer)
        self.parts.release()

    def _take_part_slot(self, what: str, deadline: Deadline | None) -> None:
        """Wait for room in the memory budget; a part in hand frees its slot when done."""
        while not self.parts.acquire(timeout=0.5):
            if deadline is not None:
                deadline.check(what)

    def put(self, key: str, full: str, source: Source, progress: Progress | None,
            deadline: Deadline | None) -> Digest:
        """Upload `source` to the object `full` (`key` names it in messages)."""
        if source.size is not None and source.size <= self.options.part_size:
            self._take_part_slot(f"upload of {key}", deadline)  # one part of the budget
            try:
                with source.open() as f:
                    data = f.read()
                self._call(f"upload of {key}", lambda: self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=data,
                    **self.options.write_args()), deadline)
            finally:
                self.parts.release()
            if progress:
                progress(len(data))
            return Digest(len(data), hashlib.sha256(data).hexdigest())
        return self._put_multipart(key, full, source, progress, deadline)

    def _put_multipart(self, key: str, full: str, source: Source, progress: Progress | None,
                       deadline: Deadline | None) -> Digest:
        upload_id = self._call(f"start of upload {key}", lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=full, **self.options.write_args()), deadline)["UploadId"]
        sha, size, etags = hashlib.sha256(), 0, {}
        in_flight: dict[Future, tuple[int, int]] = {}
        stop = threading.Event()  # set when the upload fails: its other parts end

        def upload(number: int, body: bytes) -> str:
            what = f"upload of {key} part {number}"
            return self._call(what, lambda: self._client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number,
                Body=_Body(body, deadline, stop, what)), deadline, stop)["ETag"]

        def settle(return_when: str) -> None:
            done, _ = wait(in_flight, return_when=return_when)
            for future in done:
                number, length = in_flight.pop(future)
                etags[number] = future.result()
                if progress:
                    progress(length)

        pool = self._part_pool()
        try:
            with source.open() as f:
                number = 0
                while True:
                    self._take_part_slot(f"upload of {key}", deadline)
                    buffer = self._part_buffers.take()
                    try:
                        length = _fill(f, buffer)
                    except BaseException:
                        self._part_done(buffer)
                        raise
                    if not length:
                        self._part_done(buffer)
                        break
                    number += 1
                    # A short (last) part goes as a copy, so the buffer's length is the part's.
                    body = buffer if length == len(buffer) else bytes(buffer[:length])
                    sha.update(body)  # in file order, as the parts are read
                    size += length
                    future = pool.submit(upload, number, body)
                    future.add_done_callback(lambda _, b=buffer: self._part_done(b))
                    in_flight[future] = (number, length)
                    del body, buffer  # only the parts in flight stay in memory
                    if any(f.done() for f in in_flight):
                        settle(FIRST_COMPLETED)  # surface a failed part early
            settle(ALL_COMPLETED)
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            self._call(f"completion of upload {key}", lambda: self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id,
                MultipartUpload={"Parts": parts}), deadline)
        except BaseException:
            stop.set()
            for future in in_flight:
                future.cancel()
            # A part still being sent could land after the abort, unseen by the sweep; each
            # ends by the deadline (or at its next attempt, now that `stop` is set).
            wait(in_flight)
            self._call.cleanup(f"abort of upload {full}",
                               lambda: self._client.abort_multipart_upload(
                                   Bucket=self.bucket, Key=full, UploadId=upload_id), deadline)
            raise
        return Digest(size, sha.hexdigest())

    def get(self, key: str, full: str, sink: Sink, progress: Progress | None,
            deadline: Deadline | None) -> Digest:
        """Download the object `full` (`key` names it in messages) into `sink`."""
        pool = self._part_pool()
        # In the pool, watched in slices like the parts: a hung HEAD must not keep a SIGTERM
        # that stops a restore waiting for the read timeout.
        head = pool.submit(self._call, f"size of {key}", lambda: self._client.head_object(
            Bucket=self.bucket, Key=full), deadline)
        while not wait([head], timeout=WAIT_SLICE).done:
            if deadline is not None:
                deadline.check(f"download of {key}")
        size = head.result()["ContentLength"]
        part = self.options.part_size
        ranges = [(start, min(start + part, size) - 1) for start in range(0, size, part)]
        sha, written = hashlib.sha256(), 0

        def fetch(first: int, last: int) -> list[bytes]:
            # A part is read as 1 MiB pieces, not one 8 MiB block: blocks that large are
            # mmapped afresh each time (procs.give_big_buffers_back), and faulting their pages in
            # doubled the system time of a download.
            def read() -> list[bytes]:
                body = self._client.get_object(Bucket=self.bucket, Key=full,
                                               Range=f"bytes={first}-{last}")["Body"]
                pieces, got, wanted = [], 0, last - first + 1
                while got < wanted and (piece := body.read(min(CHUNK, wanted - got))):
                    pieces.append(piece)
                    got += len(piece)
                if got != wanted:
                    raise botocore.exceptions.IncompleteReadError(
                        actual_bytes=got, expected_bytes=wanted)
                return pieces
            return self._call(f"download of {key} bytes {first}-{last}", read, deadline)

        # Parts arrive in any order but are hashed and written in order; those that come early
        # wait in `arrived`. Each holds a slot of the memory budget from its request until it is
        # written.
        in_flight: dict[Future, int] = {}
        arrived: dict[int, list[bytes]] = {}
        next_submit = next_write = 0
        out = sink.open()
        with out:
            try:
                while next_write < len(ranges):
                    if deadline is not None:
                        deadline.check(f"download of {key}")
                    # With nothing in flight, wait for a slot; otherwise take only free ones, so
                    # that transfers sharing the budget never wait on each other.
                    while next_submit < len(ranges):
                        if not in_flight:
                            self._take_part_slot(f"download of {key}", deadline)
                        elif not self.parts.acquire(blocking=False):
                            break
                        in_flight[pool.submit(fetch, *ranges[next_submit])] = next_submit
                        next_submit += 1
                    done, _ = wait(in_flight, timeout=WAIT_SLICE, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = in_flight.pop(future)
                        arrived[index] = future.result()
                    while next_write in arrived:
                        for piece in arrived.pop(next_write):
                            sha.update(piece)
                            out.write(piece)
                            written += len(piece)
                            if progress:
                                progress(len(piece))
                        next_write += 1
                        self.parts.release()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                # Every part asked for and not yet written holds a slot: in flight, arrived
                # early, or failed.
                for _ in range(next_submit - next_write):
                    self.parts.release()
                raise
        return Digest(written, sha.hexdigest())


class _PartBuffers:
    """Upload part buffers, reused from part to part and dropped when no part is in flight.

    A fresh 8 MiB block per part is a fresh mmap whose pages all fault in (glibc maps blocks
    above crikpy's 4 MiB threshold, procs.give_big_buffers_back): 262k faults per GiB uploaded.
    Dropping them when idle keeps PID 1 lean between periodic checkpoints.
    """

    def __init__(self, size: int, most: int) -> None:
        self._size, self._most = size, most
        self._free: list[bytearray] = []
        self._out = 0
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            self._out += 1
            return self._free.pop() if self._free else bytearray(self._size)

    def give_back(self, buffer: bytearray) -> None:
        with self._lock:
            self._out -= 1
            if self._out == 0:
                self._free.clear()
            elif len(self._free) < self._most:
                self._free.append(buffer)


class _Body:
    """A part's bytes as botocore reads them to send: the deadline is checked as they go, so a
    part is not sent on past it (botocore may read a body more than once: checksums, retries).
    """

    def __init__(self, data: bytes | bytearray, deadline: Deadline | None,
                 stop: threading.Event, what: str) -> None:
        self._view, self._at = memoryview(data), 0
        self._deadline, self._stop, self._what = deadline, stop, what

    def read(self, n: int = -1) -> bytes:
        if self._deadline is not None:
            self._deadline.check(self._what)
        if self._stop.is_set():
            raise StoreError(f"{self._what} stopped: its transfer failed")
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._at + n)
        chunk, self._at = bytes(self._view[self._at:end]), end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = {0: 0, 1: self._at, 2: len(self._view)}[whence] + offset
        return self._at

    def tell(self) -> int:
        return self._at

    def __len__(self) -> int:
        return len(self._view)


def _fill(reader, buffer: bytearray) -> int:
    """Read into `buffer` until it is full or the reader ends; how many bytes came."""
    view, got = memoryview(buffer), 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return got
