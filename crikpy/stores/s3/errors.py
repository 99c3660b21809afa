"""What an S3 failure means: transient (retry it) or permanent (say what to fix), as the
StoreError a person can act on."""

from __future__ import annotations

import botocore.exceptions

from crikpy.errors import StoreError
from crikpy.stores.base import MissingObject, PreconditionFailed

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


def translate(what: str, e: Exception, url: str, endpoint_url: str | None) -> Exception:
    """The StoreError a person can act on, for what a call finally failed with."""
    if isinstance(e, botocore.exceptions.ClientError):
        code = _code(e)
        if code == "PreconditionFailed":
            return PreconditionFailed(f"{what}: the object changed meanwhile")
        if code in ("", "404", "NotFound") and _status(e) == 404 \
                and e.operation_name != "HeadObject":
            # S3 names every 404 but a HEAD's (which has no body); a bare one is another
            # web server, whose 404s must not read as "no checkpoint here".
            return StoreError(f"{what}: {endpoint_url or 'the endpoint'} "
                              "answered 404 with no S3 error code: it is not an S3 server; "
                              "check --s3-endpoint-url")
        if code in ("NoSuchKey", "404", "NotFound"):
            return MissingObject(f"{what}: no such object in {url}")
        hint = _PERMANENT_HINTS.get(code, "")
        return StoreError(f"{what} in {url} failed: {describe(e)}"
                          + (f"; {hint}" if hint else ""))
    if isinstance(e, botocore.exceptions.NoCredentialsError):
        return StoreError(f"no AWS credentials found for {url}; set AWS_ACCESS_KEY_ID/"
                          "AWS_SECRET_ACCESS_KEY, a profile, IRSA or an instance role")
    if isinstance(e, (botocore.exceptions.BotoCoreError, OSError)):
        return StoreError(f"{what} in {url} failed: {describe(e)}; is the endpoint "
                          "reachable?")
    return e


def is_transient(e: BaseException) -> bool:
    if isinstance(e, botocore.exceptions.ClientError):
        return _status(e) >= 500 or _code(e) in _TRANSIENT_CODES
    return isinstance(e, (botocore.exceptions.ConnectionError,
                          botocore.exceptions.HTTPClientError,
                          botocore.exceptions.IncompleteReadError,
                          ConnectionError, TimeoutError))


def describe(e: BaseException | None) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return f"{_code(e)} (HTTP {_status(e)})"
    return f"{type(e).__name__}: {e}"


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
