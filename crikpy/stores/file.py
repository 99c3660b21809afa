"""file:// store: checkpoints in a directory, typically a mounted volume or PVC.

Objects (0600, in directories made 0700: a checkpoint is the workload's whole memory) are
written to a temporary name, fsynced and renamed, so a reader sees whole objects or none;
temporary files of a writer killed mid-write are swept later. A store holds no symbolic links,
and crikpy refuses to go through one planted there. Conditional writes hold an flock
on `.lock` at the store root, which every pod sharing the volume takes the same way; the wait
for it, like every copy (chunk by chunk), is bounded by the caller's deadline, or by
budget.STORE_CALL_SECONDS when the caller gives none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Iterator

from crikpy import budget
from crikpy.deadline import Deadline
from crikpy.errors import StoreError
from crikpy.stores.base import (Digest, MissingObject, PreconditionFailed, Progress, Sink, Source,
                                Versioned, as_sink, as_source, copy_hashing, local_write_error)

_LOCK_POLL_SECONDS = 0.05

_TMP_MARK = ".tmp-"


class FileStore:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        """Where `key` lives. A store holds no symbolic links: whoever can write the volume
        must not make crikpy (root) read, write or delete through one, outside the store."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad store key '{key}'")
        path = self.root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise StoreError(f"store {self.url} holds a symbolic link at "
                                 f"'{path.relative_to(self.root)}', which crikpy never follows; "
                                 "remove it (crikpy writes none)")
        return path

    @contextlib.contextmanager
    def _writing(self, key: str):
        """A temporary file beside the key's path, renamed over it only when writing succeeded."""
        final = self._path(key)
        try:
            private_dirs(final.parent)
            tmp = final.with_name(f"{final.name}{_TMP_MARK}{secrets.token_hex(4)}")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                try:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
            os.replace(tmp, final)
        except OSError as e:
            raise StoreError(f"cannot write {final} in store {self.url}: {e.strerror}") from e

    def put_file(self, key: str, path: str | Source, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        with as_source(path).open() as src, self._writing(key) as dst:
            return copy_hashing(src, dst, progress, deadline, f"writing {key} to {self.url}")

    def get_file(self, key: str, path: str | Sink, *, progress: Progress | None = None,
                 deadline: Deadline | None = None) -> Digest:
        sink = as_sink(path)
        try:
            src = open(self._path(key), "rb")
        except FileNotFoundError as e:
            raise MissingObject(f"object '{key}' is missing from store {self.url}") from e
        except OSError as e:
            raise StoreError(f"cannot read '{key}' from store {self.url}: {e.strerror}") from e
        with src, _LocalErrors(sink) as dst:
            try:
                return copy_hashing(src, dst, progress, deadline, f"reading {key} from {self.url}")
            except OSError as e:  # the sink's are NodeFaults by now: this is the store's
                raise StoreError(f"cannot read '{key}' from store {self.url}: "
                                 f"{e.strerror}") from e

    @contextlib.contextmanager
    def _locked(self, deadline: Deadline | None):
        lock = self.root / ".lock"
        try:
            private_dirs(self.root)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise StoreError(f"store {self.url} is not writable: {e.strerror}") from e
        # Read at each wait, not at import: the bound is the budget's, which tests shorten.
        bound = Deadline.after(budget.STORE_CALL_SECONDS)
        try:
            while True:  # a pod holding the lock and hanging must not outlive our deadline
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None:
                        deadline.check(f"the lock of store {self.url}")
                    elif bound.remaining() <= 0:
                        # flock dies with its holder, so someone alive holds it.
                        raise StoreError(
                            f"the lock {lock} of store {self.url} is held by another process "
                            f"and was not released within {budget.STORE_CALL_SECONDS:g} s; "
                            "another crikpy (a pod sharing this volume) is writing or hung: "
                            f"find it (e.g. `fuser {lock}` on each node mounting the store) "
                            "and let it finish or stop it") from None
                    time.sleep(_LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(fd)

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_absent: bool = False, deadline: Deadline | None = None) -> str:
        if deadline:
            deadline.check(f"writing {key} to {self.url}")
        with self._locked(deadline):
            if if_match is not None or if_absent:
                current = self.get_bytes(key)
                if if_absent and current is not None:
                    raise PreconditionFailed(f"'{key}' already exists in store {self.url}")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"'{key}' changed in store {self.url}")
            with self._writing(key) as f:
                f.write(data)
        return _etag(data)

    def get_bytes(self, key: str, *, deadline: Deadline | None = None) -> Versioned | None:
        if deadline:
            deadline.check(f"reading {key} from {self.url}")
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read '{key}' from store {self.url}: {e.strerror}") from e
        return Versioned(data, _etag(data))

    def list(self, prefix: str, *, deadline: Deadline | None = None) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if _TMP_MARK in name or name == ".lock":
                    continue
                yield (rel / name).as_posix()

    def delete(self, key: str, *, deadline: Deadline | None = None) -> None:
        if deadline:
            deadline.check(f"deleting {key} from {self.url}")
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"cannot delete {key} from {self.url}: {e.strerror}") from e
        try:
            # Empty directories would pile up one per checkpoint; prune them back to the root.
            for parent in path.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                parent.rmdir()
        except OSError:
            pass  # a non-empty parent ends the pruning

    def sweep(self, prefix: str, *, older_than: float, deadline: Deadline | None = None) -> int:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        cutoff, swept = time.time() - older_than, 0
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                if _TMP_MARK not in name:
                    continue
                if deadline:
                    deadline.check(f"sweeping {self.url}")
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        swept += 1
                except FileNotFoundError:
                    pass
        return swept

    def describe_credentials(self) -> str:
        return "none needed (a local directory)"


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def private_dirs(path: Path) -> None:
    """mkdir -p, each new directory 0700: a checkpoint is the workload's whole memory."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another writer made it meanwhile


class _LocalErrors:
    """A download's sink, opened: whatever fails in it (opening, writing, closing) is the local
    disk's, so this node's (NodeFault), never the store's."""

    def __init__(self, sink: Sink) -> None:
        self._path = sink.path
        try:
            self._f = sink.open()
        except OSError as e:
            raise local_write_error(e, self._path) from e

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            raise local_write_error(e, self._path) from e

    def __enter__(self) -> "_LocalErrors":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._f.__exit__(*exc)
        except OSError as e:
            raise local_write_error(e, self._path) from e
