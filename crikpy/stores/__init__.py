"""Stores: where checkpoints live. `open_store(url)` picks the backend from the URL's scheme."""

from __future__ import annotations

from urllib.parse import urlparse

from crikpy.errors import ConfigError
from crikpy.stores.base import Digest, MissingObject, PreconditionFailed, Store, Versioned

__all__ = ["Digest", "MissingObject", "PreconditionFailed", "Store", "Versioned", "open_store"]


def open_store(url: str) -> Store:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise ConfigError(f"store '{url}' must be file:///absolute/path (three slashes)")
        from crikpy.stores.file import FileStore

        return FileStore(parsed.path.rstrip("/") or "/")
    raise ConfigError(f"store '{url}': scheme '{parsed.scheme}' is not supported; use file:///path")
