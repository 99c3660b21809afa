"""Where a workload's objects live in a store: the key layout that docs/format.md states.

Under the workload's key (`namespace/name`):

    checkpoints/<id>/files/...        CRIU images, CRIU's log, the container's files, copies of
                                      additional paths
    checkpoints/<id>/manifest.json    written after every file: its presence means "committed"
    checkpoints/<id>/quarantine.json  a checkpoint set aside, with the reason
    checkpoints/<id>/attempts.json    restores of it begun and failed (bounds a restart loop)
    checkpoints/<id>/restore.log      CRIU's log of the restore that quarantined it
    latest.json                       the one checkpoint a start restores (pointer.py)
"""

from __future__ import annotations

from crikpy.checkpoint.manifest import is_id
from crikpy.errors import CheckpointNotFound

MANIFEST, QUARANTINE, ATTEMPTS, RESTORE_LOG = ("manifest.json", "quarantine.json",
                                               "attempts.json", "restore.log")


class Layout:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pointer = f"{prefix}/latest.json"
        self.checkpoints = f"{prefix}/checkpoints/"

    def checkpoint(self, ckpt_id: str) -> str:
        """The key under which checkpoint `ckpt_id`'s objects live."""
        if not is_id(ckpt_id):  # an operator's typo, or a store's garbage: never a key
            raise CheckpointNotFound(f"'{ckpt_id[:80]}' is not a checkpoint id (they look like "
                                     "20261122T142301.123Z-1a2b3c4d); see `crikpy checkpoints "
                                     "list`")
        return f"{self.checkpoints}{ckpt_id}"

    def file(self, ckpt_id: str, rel: str) -> str:
        return f"{self.checkpoint(ckpt_id)}/files/{rel}"

    def record(self, ckpt_id: str, name: str) -> str:
        """One of the objects beside a checkpoint's files: MANIFEST, QUARANTINE, ..."""
        return f"{self.checkpoint(ckpt_id)}/{name}"
