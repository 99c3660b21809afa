"""Stores: where checkpoints live. `open_store(url)` picks the backend from the URL's scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from crikpy.errors import ConfigError
from crikpy.stores.base import Digest, MissingObject, PreconditionFailed, Store, Versioned

if TYPE_CHECKING:
    from crikpy.settings import Settings

__all__ = ["Digest", "MissingObject", "PreconditionFailed", "Store", "Versioned", "open_store"]


def open_store(url: str, settings: "Settings | None" = None) -> Store:
    """The store `url` names; `settings` carry the S3 options (defaults when None)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise ConfigError(f"store '{url}' must be file:///absolute/path (three slashes)")
        from crikpy.stores.file import FileStore

        return FileStore(parsed.path.rstrip("/") or "/")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"store '{url}' names no bucket; use s3://bucket/prefix")
        from crikpy.stores.s3 import S3Options, S3Store  # boto3 loads only for s3:// stores

        options = S3Options() if settings is None else S3Options(
            endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
            path_style=settings.s3_path_style, part_size=settings.s3_part_size_mib * 1024 * 1024,
            concurrency=settings.s3_concurrency, sse=settings.s3_sse,
            sse_kms_key_id=settings.s3_sse_kms_key_id, storage_class=settings.s3_storage_class,
            credentials_file=settings.s3_credentials_file)
        return S3Store(parsed.netloc, parsed.path, options)
    raise ConfigError(f"store '{url}': scheme '{parsed.scheme}' is not supported; "
                      "use file:///path or s3://bucket/prefix")
