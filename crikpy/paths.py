"""What an additional path may be: the rules the config and the checkpoint format share.

settings.py refuses at start what a checkpoint could not record, and the manifest refuses on
reading what no crikpy would have written; both check with additional_paths_fault() below, so
that neither imports the other; and removing one. This module imports nothing of crikpy's.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from typing import Any

MAX_ADDITIONAL_PATHS = 1024
MAX_PATH_CHARS = 4096
# What the writer keeps the command and the additional paths to, each, in encoded JSON bytes:
# together well inside the manifest's limit, whatever the characters.
MAX_LIST_JSON_BYTES = 1024 * 1024


def normal_path(path: str) -> str:
    """`/data/`, `/data/.`, `//data` and `/data` are one path (POSIX keeps a leading `//`)."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.startswith("/") else path


def plain_text(value: Any) -> bool:
    """A string a path can be: no NUL, and UTF-8 encodable (no lone surrogates)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def additional_paths_fault(paths: list[str]) -> str | None:
    """Why a manifest cannot record these (normalised) additional paths, or None if it can."""
    if len(paths) > MAX_ADDITIONAL_PATHS:
        return f"there are {len(paths)}; a checkpoint records at most {MAX_ADDITIONAL_PATHS}"
    for path in paths:
        if not plain_text(path):
            return f"{path.encode(errors='backslashreplace').decode()[:80]!r} is not valid UTF-8"
        if len(path) > MAX_PATH_CHARS:
            return f"{path[:60]!r}... is longer than {MAX_PATH_CHARS} characters"
    if len(json.dumps(paths)) > MAX_LIST_JSON_BYTES:
        return f"together they are longer than the {MAX_LIST_JSON_BYTES} bytes a checkpoint records"
    return None


def remove(path: str, ignore_errors: bool = False) -> None:
    """Delete a file, symbolic link or directory tree; absent is fine. With `ignore_errors`,
    what cannot be deleted stays, silently."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise
