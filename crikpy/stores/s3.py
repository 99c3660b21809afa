"""s3:// store: checkpoints in a bucket, so a pod can come back on any node.

Transfers use the link without holding a checkpoint in memory: files above one part go up as
multipart uploads and come down as ranged GETs, parts in parallel. One budget of `concurrency`
parts, shared by every transfer of the store (several files may move at once during a dump),
bounds the checkpoint bytes in RAM to concurrency x part size: a part takes a slot before it is
read (upload) or requested (download) and gives it back once sent or written. One pool of
`concurrency` threads moves the parts of every transfer. The sha256 is computed in order as the
bytes pass, so there is no second read. Transient failures (5xx, SlowDown, throttling, resets,
timeouts) are retried with exponential backoff and jitter, bounded by the caller's deadline;
permanent ones (AccessDenied, NoSuchBucket, bad credentials) fail at once with what to fix.

Conditional writes (If-None-Match / If-Match) make the latest pointer safe against a second
writer; a server that ignores them is detected once, and crikpy warns and writes without them.

Cleanups (aborting a failed multipart upload, deleting the probe object) run before the call
returns, bounded by CLEANUP_SECONDS, never in a thread that dies with the process; what they
miss, and the uploads of a crikpy killed mid-checkpoint, `sweep` aborts at a later commit.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime
import hashlib
import math
import os
import secrets
import threading
import time
from concurrent.futures import (ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor,
                                wait)
from typing import Callable, Iterator, TypeVar

import boto3
import botocore.exceptions
import botocore.session
import tenacity
from botocore.config import Config

from crikpy import budget, log
from crikpy.deadline import Deadline, DeadlineExceeded
from crikpy.errors import ConfigError, CrikpyError, StoreError
from crikpy.files import UnfitFile, read_small
from crikpy.stores.base import (CHUNK, Digest, MissingObject, PreconditionFailed, Progress, Sink,
                                Source, Versioned, as_sink, as_source, local_write_error)

MIB = 1024 * 1024
CLEANUP_SECONDS = 3.0  # the most a cleanup may take
CLEANUP_GRACE = 0.5  # how far past the caller's deadline, into the shutdown reserve
_WAIT_SLICE = 0.25  # how often a wait looks at its deadline (and for a SIGTERM that stops it)
T = TypeVar("T")
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                    "ConditionalRequestConflict", "RequestLimitExceeded", "BadDigest"}
_PERMANENT_HINTS = {
    "AccessDenied": "the credentials may not do this; grant s3:GetObject, s3:PutObject, "
                    "s3:DeleteObject and s3:ListBucket on the bucket",
    "NoSuchBucket": "the bucket does not exist; create it or fix --store",
    "InvalidAccessKeyId": "the access key is unknown to this endpoint; check the credentials "
                          "and --s3-endpoint-url",
    "SignatureDoesNotMatch": "the secret key does not match; check the credentials",
    "InvalidBucketName": "the bucket name is not valid; fix --store",
    "AuthorizationHeaderMalformed": "the region is wrong for this bucket; set --s3-region",
    "PermanentRedirect": "the bucket lives in another region; set --s3-region",
}


@dataclasses.dataclass(frozen=True)
class S3Options:
    """Every S3 setting in one object, like s3transfer's TransferConfig."""

    endpoint_url: str | None = None  # None: boto3's own (AWS_ENDPOINT_URL, config files)
    region: str | None = None  # None: boto3's own (AWS_REGION, AWS_DEFAULT_REGION, ...)
    path_style: bool = False
    part_size: int = 8 * MIB
    # Parts in RAM at once, across all transfers: the memory bound is part_size x concurrency.
    concurrency: int = 4
    sse: str | None = None  # "AES256" (SSE-S3) or "aws:kms"
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    # An AWS shared-credentials file (a mounted Secret) that only crikpy reads: credentials in
    # the environment would be inherited by the workload and so end up in every checkpoint.
    credentials_file: str | None = None
    list_page_size: int = 1000
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # Without a deadline (a restore, the CLI), transient failures stop being retried after this:
    # by default the bound every store gives a call without a deadline, read when the options
    # are made (so a test can shorten it).
    retry_seconds: float = dataclasses.field(
        default_factory=lambda: budget.STORE_CALL_SECONDS)

    def __post_init__(self) -> None:
        if self.part_size < 5 * MIB:
            raise ConfigError(f"s3 part size must be at least 5 MiB (S3's minimum), "
                              f"got {self.part_size // MIB} MiB")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"s3 concurrency must be between 1 and 64, got {self.concurrency}")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"s3 server-side encryption '{self.sse}' is not AES256 or aws:kms")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ConfigError("an SSE-KMS key id needs --s3-sse aws:kms")

    def write_args(self) -> dict:
        """Arguments every object write carries: encryption and storage class."""
        args = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args


def _check_credentials_file(path: str) -> None:
    """ConfigError naming the file unless it holds the profile crikpy will use, with both keys:
    botocore would otherwise fail later, with an error that does not name it."""
    profile = os.environ.get("AWS_PROFILE", "default")
    hint = ("check --s3-credentials-file and the Secret mounted there; it needs "
            f"[{profile}] with aws_access_key_id and aws_secret_access_key")
    try:
        text = read_small(path, limit=64 * 1024).decode()
        parser = configparser.RawConfigParser()
        parser.read_string(text)
    except OSError as e:
        raise ConfigError(f"s3 credentials file {path} cannot be read: {e.strerror}; {hint}")
    except UnfitFile as e:
        raise ConfigError(f"s3 credentials file {path} {e}; {hint}") from None
    except (UnicodeDecodeError, configparser.Error) as e:
        reason = str(e).splitlines()[0].rstrip(".")
        raise ConfigError(f"s3 credentials file {path} is not an AWS credentials file "
                          f"({reason}); {hint}") from None
    if not (parser.has_option(profile, "aws_access_key_id")
            and parser.has_option(profile, "aws_secret_access_key")):
        raise ConfigError(f"s3 credentials file {path} lacks a key; {hint}")


class S3Store:
    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        self.bucket, self.prefix, self.options = bucket, prefix.strip("/"), options
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        core = botocore.session.Session()
        if options.credentials_file:
            _check_credentials_file(options.credentials_file)
            core.set_config_variable("credentials_file", options.credentials_file)
        config = Config(
            region_name=options.region,
            s3={"addressing_style": "path" if options.path_style else "auto"},
            # crikpy retries itself, bounded by the checkpoint's deadline.
            retries={"total_max_attempts": 1},
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            max_pool_connections=options.concurrency + 4,
        )
        try:
            self._session = boto3.session.Session(botocore_session=core)
            self._client = self._session.client("s3", endpoint_url=options.endpoint_url,
                                                config=config)
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise ConfigError(f"no S3 client for {self.url}: {e}; check --s3-region and "
                              "--s3-endpoint-url") from None
        self._conditional_writes: bool | None = None  # None: not probed yet
        self._log = log.get().bind(store=self.url)
        self._parts = threading.BoundedSemaphore(options.concurrency)  # the memory budget
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
        self._parts.release()

    def _take_part_slot(self, what: str, deadline: Deadline | None) -> None:
        """Wait for room in the memory budget; a part in hand frees its slot when done."""
        while not self._parts.acquire(timeout=0.5):
            if deadline is not None:
                deadline.check(what)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # calls, retried
    def _call(self, what: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
        """Run one S3 call, retrying transient failures, and translate what finally fails.

        With a deadline the call is also abandoned when the deadline passes mid-request (a
        hung connection must not outlive the grace period); its thread is left to die.
        """
        if deadline is None:
            return self._retrying(what, fn, None)
        deadline.check(what)
        outcome: dict = {}

        def attempt() -> None:
            try:
                outcome["value"] = self._retrying(what, fn, deadline)
            except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
                outcome["error"] = e

        worker = threading.Thread(target=attempt, name="s3-call", daemon=True)
        worker.start()
        while worker.is_alive():  # in slices, so a SIGTERM that stops this step is seen
            try:
                deadline.check(what)
            except DeadlineExceeded:
                raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                       "checkpoint deadline") from None
            worker.join(min(_WAIT_SLICE, max(0.0, deadline.remaining())))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _retrying(self, what: str, fn: Callable[[], T], deadline: Deadline | None) -> T:
        started = time.monotonic()

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            if deadline is not None and math.isfinite(deadline.at):
                return deadline.remaining() <= 0.5
            # No time limit (a restore's download): a store that keeps failing is a store fault.
            return time.monotonic() - started > self.options.retry_seconds

        def log_retry(state: tenacity.RetryCallState) -> None:
            self._log.warning("store.retry", call=what, attempt=state.attempt_number,
                              error=_describe(state.outcome.exception()))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient), stop=out_of_time,
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),  # "full jitter"
            before_sleep=log_retry, reraise=True, sleep=_sleeper(deadline),
        )
        try:
            return retrying(fn)
        except Exception as e:
            if deadline is not None and deadline.remaining() <= 0.5 and _is_transient(e):
                raise DeadlineExceeded(f"{what} in {self.url} did not finish before the "
                                       f"checkpoint deadline (last error: {_describe(e)})") from e
            translated = self._translate(what, e)
            if translated is e:
                raise
            raise translated from e

    def _translate(self, what: str, e: Exception) -> Exception:
        """The StoreError a person can act on, for what a call finally failed with."""
        if isinstance(e, botocore.exceptions.ClientError):
            code = _code(e)
            if code == "PreconditionFailed":
                return PreconditionFailed(f"{what}: the object changed meanwhile")
            if code in ("", "404", "NotFound") and _status(e) == 404 \
                    and e.operation_name != "HeadObject":
                # S3 names every 404 but a HEAD's (which has no body); a bare one is another
                # web server, whose 404s must not read as "no checkpoint here".
                return StoreError(f"{what}: {self.options.endpoint_url or 'the endpoint'} "
                                  "answered 404 with no S3 error code: it is not an S3 server; "
                                  "check --s3-endpoint-url")
            if code in ("NoSuchKey", "404", "NotFound"):
                return MissingObject(f"{what}: no such object in {self.url}")
            hint = _PERMANENT_HINTS.get(code, "")
            return StoreError(f"{what} in {self.url} failed: {_describe(e)}"
                              + (f"; {hint}" if hint else ""))
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return StoreError(f"no AWS credentials found for {self.url}; set AWS_ACCESS_KEY_ID/"
                              "AWS_SECRET_ACCESS_KEY, a profile, IRSA or an instance role")
        if isinstance(e, (botocore.exceptions.BotoCoreError, OSError)):
            return StoreError(f"{what} in {self.url} failed: {_describe(e)}; is the endpoint "
                              "reachable?")
        return e

    # large objects
    def put_file(self, key: str, path: str | Source, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        source = as_source(path)
        if source.size is not None and source.size <= self.options.part_size:
            self._take_part_slot(f"upload of {key}", deadline)  # one part of the budget
            try:
                with source.open() as f:
                    data = f.read()
                self._call(f"upload of {key}", lambda: self._client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data,
                    **self.options.write_args()), deadline)
            finally:
                self._parts.release()
            if progress:
                progress(len(data))
            return Digest(len(data), hashlib.sha256(data).hexdigest())
        return self._put_multipart(key, source, progress, deadline)

    def _put_multipart(self, key: str, source: Source, progress: Progress | None,
                       deadline: Deadline | None) -> Digest:
        full = self._key(key)
        upload_id = self._call(f"start of upload {key}", lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=full, **self.options.write_args()), deadline)["UploadId"]
        sha, size, etags = hashlib.sha256(), 0, {}
        in_flight: dict[Future, tuple[int, int]] = {}

        def upload(number: int, body: bytes) -> str:
            return self._call(f"upload of {key} part {number}", lambda: self._client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body),
                deadline)["ETag"]

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
            for future in in_flight:
                future.cancel()
            self._abort(full, upload_id, deadline)
            raise
        return Digest(size, sha.hexdigest())

    def _abort(self, full_key: str, upload_id: str, deadline: Deadline | None) -> None:
        self._cleanup(f"abort of upload {full_key}", lambda: self._client.abort_multipart_upload(
            Bucket=self.bucket, Key=full_key, UploadId=upload_id), deadline)

    def _cleanup(self, what: str, fn: Callable[[], object],
                 deadline: Deadline | None = None) -> None:
        """One bounded try, finished before returning; a miss is swept at a later commit.

        Past the caller's deadline it may take CLEANUP_GRACE more: the rest of the shutdown
        reserve belongs to the workload.
        """
        seconds = CLEANUP_SECONDS
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline.remaining()) + CLEANUP_GRACE)
        try:
            self._call(what, fn, Deadline.after(seconds))
        except CrikpyError as e:
            self._log.warning("store.cleanup_failed", call=what, error=str(e),
                              detail="swept at the next commit, or by the bucket's lifecycle "
                                     "rule for incomplete multipart uploads")

    def sweep(self, prefix: str, *, older_than: float, deadline: Deadline | None = None) -> int:
        """Abort multipart uploads under `prefix` begun more than `older_than` seconds ago."""
        full, strip, swept = self._key(prefix), len(self._key("")), 0
        now = datetime.datetime.now(datetime.timezone.utc)
        args: dict = dict(Bucket=self.bucket, Prefix=full)
        while True:
            page = self._call(f"listing of uploads under {prefix}",
                              lambda: self._client.list_multipart_uploads(**args), deadline)
            for upload in page.get("Uploads", []):
                key = upload["Key"][strip:]
                if (now - upload["Initiated"]).total_seconds() <= older_than:
                    continue  # its writer may be alive
                self._call(f"abort of abandoned upload {key}",
                           lambda u=upload: self._client.abort_multipart_upload(
                               Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]),
                           deadline)
                self._log.info("store.upload_swept", key=key)
                swept += 1
            if not page.get("IsTruncated"):
                return swept
            args.update(KeyMarker=page.get("NextKeyMarker", ""),
                        UploadIdMarker=page.get("NextUploadIdMarker", ""))

    def get_file(self, key: str, path: str | Sink, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        sink = as_sink(path)
        try:
            return self._get(key, sink, progress, deadline)
        except OSError as e:  # the network's are StoreErrors by now: this is the local disk
            raise local_write_error(e, sink.path) from e

    def _get(self, key: str, sink: Sink, progress: Progress | None,
             deadline: Deadline | None) -> Digest:
        full = self._key(key)
        size = self._call(f"size of {key}", lambda: self._client.head_object(
            Bucket=self.bucket, Key=full), deadline)["ContentLength"]
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
        pool = self._part_pool()
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
                        elif not self._parts.acquire(blocking=False):
                            break
                        in_flight[pool.submit(fetch, *ranges[next_submit])] = next_submit
                        next_submit += 1
                    done, _ = wait(in_flight, timeout=_WAIT_SLICE, return_when=FIRST_COMPLETED)
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
                        self._parts.release()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                # Every part asked for and not yet written holds a slot: in flight, arrived
                # early, or failed.
                for _ in range(next_submit - next_write):
                    self._parts.release()
                raise
        return Digest(written, sha.hexdigest())

    # small objects
    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_absent: bool = False, deadline: Deadline | None = None) -> str:
        conditions = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match:
            conditions["IfMatch"] = if_match
        if conditions and not self._supports_conditional_writes(deadline):
            conditions = {}
        try:
            resp = self._call(f"write of {key}", lambda: self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **conditions,
                **self.options.write_args()), deadline)
        except MissingObject as e:  # some servers answer If-Match on a missing key with 404
            raise PreconditionFailed(f"write of {key}: the object is gone") from e
        return resp["ETag"]

    def _supports_conditional_writes(self, deadline: Deadline | None) -> bool:
        """Probe once: a second If-None-Match write of the same key must be refused."""
        if self._conditional_writes is None:
            probe = self._key(f".crikpy-conditional-probe-{secrets.token_hex(6)}")

            def put():
                return self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"",
                                               IfNoneMatch="*")
            try:
                self._call("conditional-write probe", put, deadline)
                self._call("conditional-write probe", put, deadline)
                self._conditional_writes = False
            except PreconditionFailed:
                self._conditional_writes = True
            except StoreError as e:
                if isinstance(e, DeadlineExceeded) or "NotImplemented" not in str(e):
                    raise
                self._conditional_writes = False
            finally:
                self._cleanup("delete of the conditional-write probe",
                              lambda: self._client.delete_object(Bucket=self.bucket, Key=probe),
                              deadline)
            if not self._conditional_writes:
                self._log.warning("store.conditional_writes_unsupported",
                                  detail="this server ignores If-None-Match/If-Match; two pods "
                                         "with the same name could overwrite each other's pointer")
        return self._conditional_writes

    def get_bytes(self, key: str, *, deadline: Deadline | None = None) -> Versioned | None:
        def read():
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return Versioned(resp["Body"].read(), resp["ETag"])
        try:
            return self._call(f"read of {key}", read, deadline)
        except MissingObject:
            return None

    def list(self, prefix: str, *, deadline: Deadline | None = None) -> Iterator[str]:
        full = self._key(prefix)
        strip = len(self._key(""))
        token = None
        while True:
            args = dict(Bucket=self.bucket, Prefix=full, MaxKeys=self.options.list_page_size)
            if token:
                args["ContinuationToken"] = token
            page = self._call(f"listing of {prefix}", lambda: self._client.list_objects_v2(**args),
                              deadline)
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str, *, deadline: Deadline | None = None) -> None:
        self._call(f"delete of {key}", lambda: self._client.delete_object(
            Bucket=self.bucket, Key=self._key(key)), deadline)

    def describe_credentials(self) -> str:
        creds = self._session.get_credentials()
        if creds is None:
            return "none found"
        return f"{creds.method} (access key {creds.access_key[:4]}...)"


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


def _fill(reader, buffer: bytearray) -> int:
    """Read into `buffer` until it is full or the reader ends; how many bytes came."""
    view, got = memoryview(buffer), 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, botocore.exceptions.ClientError):
        return _status(e) >= 500 or _code(e) in _TRANSIENT_CODES
    return isinstance(e, (botocore.exceptions.ConnectionError,
                          botocore.exceptions.HTTPClientError,
                          botocore.exceptions.IncompleteReadError,
                          ConnectionError, TimeoutError))


def _describe(e: BaseException | None) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return f"{_code(e)} (HTTP {_status(e)})"
    return f"{type(e).__name__}: {e}"


def _sleeper(deadline: Deadline | None) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline.remaining() - 0.5))
        time.sleep(seconds)
    return sleep

