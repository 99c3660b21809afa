"""crikpy's parts as Settings describe them: the composition root of `crikpy run` and the CLI.

The checkpoint format and the stores know nothing of settings; this module is where settings
become a repository (its store, its keys, its retention), opened now or when first needed.
"""

from __future__ import annotations

import threading

from crikpy.checkpoint import keys as keys_mod
from crikpy.checkpoint import pointer
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.settings import Settings
from crikpy.stores import open_store
from crikpy.tasks import TaskGroup


class LazyRepository:
    """A repository opened on first use: a waiting PID 1 then holds no S3 client (boto3).

    Opening costs about half a second (importing boto3, making a client): `warm()` starts it in
    a thread when a checkpoint begins, so that it overlaps CRIU's own start.
    """

    def __init__(self, settings: Settings, owner: str, known: pointer.Pointer | None) -> None:
        self._settings = settings
        self._repo: CheckpointRepository | None = None
        self._failed: Exception | None = None
        self._lock = threading.Lock()
        # What the pod start that handed over knew: the repository goes on from it.
        self.owner, self.known = owner, known

    def warm(self) -> None:
        """Open the store as a helper task; what fails there is raised at first use."""
        if self._repo is None:
            TaskGroup("store-warm", 1).submit(self._open, True)

    def _open(self, warming: bool = False) -> CheckpointRepository | None:
        with self._lock:
            if self._repo is None and self._failed is None:
                try:
                    self._repo = open_repository(self._settings, self.owner)
                    self._repo.known = self.known
                except Exception as e:  # noqa: BLE001  (raised where the store is used)
                    self._failed = e
            if self._repo is None:
                if warming:
                    return None
                failed, self._failed = self._failed, None  # the next use tries again
                raise failed
            return self._repo

    def __getattr__(self, name: str):
        return getattr(self._repo if self._repo is not None else self._open(), name)


def open_repository(settings: Settings, owner: str | None = None) -> CheckpointRepository:
    """The repository `settings` describe: its store, its keys, its retention."""
    ring = keys_mod.load(settings.encryption_key_file) if settings.encryption_key_file else None
    return CheckpointRepository(open_store(settings.store, settings.s3), settings.workload_key,
                                settings.keep_checkpoints, settings.longest_checkpoint, ring,
                                owner)
