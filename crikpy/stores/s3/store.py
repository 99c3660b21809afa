"""S3Store, the Store protocol over a bucket: small objects (conditional writes, probed once),
listing, deletes and the sweep of abandoned multipart uploads; large objects go to transfer.

Transient failures (5xx, SlowDown, throttling, resets, timeouts) are retried, bounded by the
caller's deadline; permanent ones (AccessDenied, NoSuchBucket, bad credentials) fail at once
with what to fix. Conditional writes (If-None-Match / If-Match) make the latest pointer safe
against a second writer; a server that ignores them is detected once, and crikpy warns and
writes without them. Cleanups (aborting a failed multipart upload, deleting the probe object)
run before the call returns, bounded by CLEANUP_SECONDS, never in a thread that dies with the
process; what they miss, and the uploads of a crikpy killed mid-checkpoint, `sweep` aborts at a
later commit.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Iterator

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

from crikpy import log
from crikpy.deadline import Deadline, DeadlineExceeded
from crikpy.errors import ConfigError, StoreError
from crikpy.stores.base import (Digest, MissingObject, PreconditionFailed, Progress, Sink, Source,
                                Versioned, as_sink, as_source, local_write_error)
from crikpy.stores.s3.calls import Calls
from crikpy.stores.s3.options import S3Options, check_credentials_file
from crikpy.stores.s3.transfer import Transfers


class S3Store:
    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        self.bucket, self.prefix, self.options = bucket, prefix.strip("/"), options
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        core = botocore.session.Session()
        if options.credentials_file:
            check_credentials_file(options.credentials_file)
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
        self._call = Calls(self._client, self.url, options, self._log)
        self._transfers = Transfers(self._client, bucket, options, self._call)
        self._parts = self._transfers.parts  # the memory budget, for the tests to look at

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # large objects
    def put_file(self, key: str, path: str | Source, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        return self._transfers.put(key, self._key(key), as_source(path), progress, deadline)

    def get_file(self, key: str, path: str | Sink, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        sink = as_sink(path)
        try:
            return self._transfers.get(key, self._key(key), sink, progress, deadline)
        except OSError as e:  # the network's are StoreErrors by now: this is the local disk
            raise local_write_error(e, sink.path) from e

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

    # small objects
    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_absent: bool = False, deadline: Deadline | None = None) -> str:
        conditions = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match:
            conditions["IfMatch"] = if_match
        if conditions and not self._supports_conditional_writes(key, deadline):
            conditions = {}
        try:
            resp = self._call(f"write of {key}", lambda: self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **conditions,
                **self.options.write_args()), deadline)
        except MissingObject as e:  # some servers answer If-Match on a missing key with 404
            raise PreconditionFailed(f"write of {key}: the object is gone") from e
        return resp["ETag"]

    def _supports_conditional_writes(self, key: str, deadline: Deadline | None) -> bool:
        """Probe once: a second If-None-Match write of the same key must be refused.

        The probe goes beside `key`, the object about to be written conditionally: credentials
        scoped to a workload's prefix may write there and nowhere else (the store root is
        outside it), and the store need not know how a repository lays out its keys.
        """
        if self._conditional_writes is None:
            beside = key.rpartition("/")[0]
            probe = self._key(f"{beside}/" * bool(beside)
                              + f".crikpy-conditional-probe-{secrets.token_hex(6)}")

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
                self._call.cleanup("delete of the conditional-write probe",
                                   lambda: self._client.delete_object(Bucket=self.bucket,
                                                                      Key=probe),
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
