"""s3:// store: checkpoints in a bucket, so a pod can come back on any node.

One job per module: options (the settings and the credentials file), errors (what a failure
means: retry it or tell the user what to fix), calls (one S3 call, retried within its deadline),
transfer (large objects as parts, within one memory budget), store (S3Store: the Store protocol,
small objects, listing, the sweep and the conditional-write probe). S3Options (options.py) loads
no boto3, so that the settings can hold one; S3Store and the rest load it, so they are imported
on first use, and crikpy.stores asks for them only for s3:// stores.
"""

from typing import Any

from crikpy.stores.s3.options import MIB, S3Options

__all__ = ["CLEANUP_GRACE", "CLEANUP_SECONDS", "MIB", "S3Options", "S3Store"]

_LAZY = {"CLEANUP_GRACE": "crikpy.stores.s3.calls", "CLEANUP_SECONDS": "crikpy.stores.s3.calls",
         "S3Store": "crikpy.stores.s3.store"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(_LAZY[name]), name)
