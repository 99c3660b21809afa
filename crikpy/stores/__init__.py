"""Stores: where checkpoints live. `open_store(url)` picks the backend from the URL's scheme."""

from __future__ import annotations

from urllib.parse import urlparse

from crikpy.errors import ConfigError
from crikpy.stores.base import Digest, MissingObject, PreconditionFailed, Store, Versioned
from crikpy.stores.s3.options import S3Options

__all__ = ["Digest", "MissingObject", "PreconditionFailed", "S3Options", "Store", "Versioned",
           "open_store"]


def open_store(url: str, s3_options: S3Options | None = None) -> Store:
    """The store `url` names; `s3_options` are an s3:// store's (defaults when None)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise ConfigError(f"store '{url}' must be file:///absolute/path (three slashes)")
        from crikpy.stores.file import FileStore

        return FileStore(parsed.path.rstrip("/") or "/")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"store '{url}' names no bucket; use s3://bucket/prefix")
        from crikpy.stores.s3.store import S3Store  # boto3 loads only for s3:// stores

        options = s3_options or S3Options()
        options.check_pairing()
        return S3Store(parsed.netloc, parsed.path, options)
    raise ConfigError(f"store '{url}': scheme '{parsed.scheme}' is not supported; "
                      "use file:///path or s3://bucket/prefix")
