"""Every S3 setting in one object, checked when made (and check_pairing() when an s3:// store
is opened), and the check of a credentials file."""

from __future__ import annotations

import configparser
import dataclasses
import os

from crikpy import budget
from crikpy.errors import ConfigError
from crikpy.files import UnfitFile, read_small

MIB = 1024 * 1024


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
    # An attempt's longest wait for the server, cut further to what is left of a deadline
    # (calls.py); a live server answers far sooner, and a retry follows within the deadline.
    read_timeout: float = 10.0
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

    def check_pairing(self) -> None:
        """ConfigError for options that contradict each other, which only matters to an s3://
        store (open_store checks it): a file:// store's settings may carry a stray KMS key id."""
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


def check_credentials_file(path: str) -> None:
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
