"""s3:// store: checkpoints in a bucket, so a pod can come back on any node.

One job per module: options (the settings and the credentials file), errors (what a failure
means: retry it or tell the user what to fix), calls (one S3 call, retried within its deadline),
transfer (large objects as parts, within one memory budget), store (S3Store: the Store protocol,
small objects, listing, the sweep and the conditional-write probe). Importing this package loads
boto3, which is why crikpy.stores imports it only for s3:// stores.
"""

from crikpy.stores.s3.calls import CLEANUP_GRACE, CLEANUP_SECONDS
from crikpy.stores.s3.options import MIB, S3Options
from crikpy.stores.s3.store import S3Store

__all__ = ["CLEANUP_GRACE", "CLEANUP_SECONDS", "MIB", "S3Options", "S3Store"]
