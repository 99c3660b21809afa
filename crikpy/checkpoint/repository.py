"""One workload's checkpoints in one store: what reads them, and the repository object.

A checkpoint counts only once its manifest exists, and the manifest is written only after every
file it lists is seen in the store (commit.py); a start restores only what the pointer names
(pointer.py), so a dump or upload cut off half-way is never seen by a restore. The repository's
jobs are split as restic's are: the key layout (layout.py), the pointer (pointer.py), committing
(commit.py), the records beside a checkpoint (records.py), retention (retention.py), and the
codec stack (codec.py); this module reads manifests and fetches files, verified, and holds what
they share. docs/format.md is the spec.
"""

from __future__ import annotations

from pathlib import Path

from crikpy import log
from crikpy.checkpoint import codec, pointer
from crikpy.checkpoint.commit import FILES_AT_ONCE, Committing
from crikpy.checkpoint.keys import KeyRing
from crikpy.checkpoint.layout import MANIFEST, Layout
from crikpy.checkpoint.manifest import FileEntry, Manifest, timestamp
from crikpy.checkpoint.records import Records
from crikpy.checkpoint.retention import Retention
from crikpy.checkpoint.sealed import (AuthenticationFailed, Binding, encryption_record,
                                      is_sealed, open_bytes, sealing_key_id)
from crikpy.deadline import Deadline
from crikpy.errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, RaceLost
from crikpy.stores import MissingObject, Store
from crikpy.tasks import run_each

class CheckpointRepository(Committing, Records, Retention):
    """The checkpoints of one workload in one store."""

    def __init__(self, store: Store, workload_key: str, keep: int = 2,
                 stale_after: float = 600.0, keys: KeyRing | None = None,
                 owner: str | None = None) -> None:
        """`stale_after`: seconds after which a writer of this name must be dead (the longest a
        checkpoint may take); its leftovers are swept only then, never while it may be alive.
        `keys`: seal what is written, and accept only what opens under them (sealed.py)."""
        self.store = store
        self.keys = keys
        self.prefix = workload_key
        self.layout = Layout(workload_key)
        self.keep = keep
        self.stale_after = stale_after
        # Who this pod start is in the pointers it writes, and the pointer as it last knew it
        # its own (found at its start, or written by it). Both cross the lean re-exec.
        self.owner = owner or pointer.new_owner()
        self.known: pointer.Pointer | None = None
        self._log = log.get().bind(store=store.url, workload=workload_key)

    # the latest pointer (crikpy.checkpoint.pointer says who may move it, and how)
    def _read_pointer(self, deadline: Deadline | None = None) -> pointer.Pointer:
        """The pointer as it is now. The first read is what this pod found at its start, the
        pointer it may move or clear as long as it is unchanged."""
        now = pointer.read(self.store, self.layout.pointer, deadline)
        if self.known is None:
            self.known = now
        return now

    def _write_pointer(self, ckpt_id: str | None, deadline: Deadline | None = None,
                       **context) -> None:
        """Move the pointer from what this pod knows it to be; RaceLost if another moved it."""
        seen = self.known if self.known is not None else self._read_pointer(deadline)
        self.known = pointer.write(self.store, self.layout.pointer, seen, ckpt_id, self.owner,
                                   timestamp(), deadline, **context)

    def latest_id(self, deadline: Deadline | None = None) -> str | None:
        """The checkpoint the pointer names; CorruptCheckpoint when it cannot be read."""
        return pointer.raise_if_garbled(self._read_pointer(deadline))

    def latest(self) -> Manifest | None:
        """The manifest the pointer names, verified; None when there is nothing to restore."""
        ckpt_id = self.latest_id()
        if ckpt_id is None:
            return None
        return self.manifest(ckpt_id)

    def clear_latest(self, reason: str, deadline: Deadline | None = None, *,
                     naming: str | None = None) -> pointer.Cleared:
        """Point at nothing, so the next start is cold; keeps the checkpoints themselves.

        Only while the pointer is this pod's (pointer.is_ours), never over what another pod
        wrote since; with `naming`, only while it names that checkpoint (one set aside or
        deleted). Logs what it did, and returns it.
        """
        now = pointer.read(self.store, self.layout.pointer, deadline)
        if now.id is None:
            result = pointer.Cleared.ALREADY_CLEAR
        elif not (now.id == naming if naming is not None
                  else pointer.is_ours(now, self.owner, self.known)):
            result = pointer.Cleared.NOT_OURS
        else:
            try:
                self.known = pointer.write(self.store, self.layout.pointer, now, None, self.owner,
                                           timestamp(), deadline, reason=reason)
                result = pointer.Cleared.CLEARED
            except RaceLost:
                result = pointer.Cleared.RACE_LOST
        if result is pointer.Cleared.CLEARED:
            self._log.info("latest.cleared", id=now.id, reason=reason)
        else:
            self._log.info("latest.clear_skipped", names=now.id, writer=now.writer,
                           why=result.value, reason=reason)
        return result

    def point_at(self, ckpt_id: str, reason: str, deadline: Deadline | None = None) -> None:
        """Make an older committed checkpoint the latest (a fallback, or a release)."""
        self._write_pointer(ckpt_id, deadline, reason=reason)

    # reading
    def manifest(self, ckpt_id: str, deadline: Deadline | None = None) -> Manifest:
        obj = self.store.get_bytes(self.layout.record(ckpt_id, MANIFEST), deadline=deadline)
        if obj is None:
            if any(True for _ in self.store.list(self.layout.checkpoint(ckpt_id) + "/",
                                                 deadline=deadline)):
                raise CorruptCheckpoint(f"checkpoint {ckpt_id} has no manifest (never committed)")
            raise CheckpointNotFound(
                f"checkpoint {ckpt_id} is not in {self.store.url} under {self.prefix}; "
                "see `crikpy checkpoints list`"
            )
        data = self._open_manifest(ckpt_id, obj.data)
        manifest = Manifest.from_json(data, where=f"of checkpoint {ckpt_id}")
        if manifest.id != ckpt_id:
            raise CorruptCheckpoint(f"manifest of checkpoint {ckpt_id} names another id "
                                    f"{manifest.id}")
        if self.keys is not None and manifest.encryption != encryption_record(
                sealing_key_id(obj.data)):
            raise AuthenticationFailed(f"authentication failed: the manifest of checkpoint "
                                       f"{ckpt_id} says it was sealed otherwise than it was")
        return manifest

    def _open_manifest(self, ckpt_id: str, data: bytes) -> bytes:
        """The manifest's JSON; ConfigError when it is sealed and no key here opens it."""
        binding = self._binding(ckpt_id, MANIFEST)
        if is_sealed(data) or self.keys is not None:
            return open_bytes(data, self.keys, binding)
        return data

    def fetch(self, manifest: Manifest, dest: Path, deadline: Deadline | None = None) -> None:
        """Download every file and check it against the manifest before anyone reads it."""
        watch = log.Stopwatch()
        progress = log.TransferProgress("download", manifest.total_bytes, id=manifest.id)
        # The manifest opened under a key: every file must open under that same key.
        keys = None if self.keys is None else self.keys.only(
            bytes.fromhex(manifest.encryption["key_id"]))

        def download(entry: FileEntry) -> None:
            target = dest / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = codec.decode(str(target), keys, self._binding(manifest.id, f"files/{entry.path}"),
                                entry.codec, f"checkpoint {manifest.id}: {entry.path}")
            try:
                digest = self.store.get_file(self.layout.file(manifest.id, entry.path),
                                             sink, progress=progress, deadline=deadline)
            except MissingObject:
                raise CorruptCheckpoint(f"checkpoint {manifest.id}: file {entry.path} is missing")
            except ConfigError as e:  # sealed with a key other than its manifest's: tampered
                raise AuthenticationFailed(f"authentication failed: {e}") from e
            if (digest.size, digest.sha256) != (entry.size, entry.sha256):
                raise CorruptCheckpoint(
                    f"checkpoint {manifest.id}: file {entry.path} does not match its manifest "
                    f"(size {digest.size} vs {entry.size}, sha256 {digest.sha256[:12]} vs "
                    f"{entry.sha256[:12]})"
                )
        # The biggest first: the pages take longest, and the small ones fill in beside them.
        run_each(download, sorted(manifest.files, key=lambda f: -f.size), "download",
                 FILES_AT_ONCE)
        self._log.info("checkpoint.fetched", id=manifest.id, files=len(manifest.files),
                       bytes=manifest.total_bytes, seconds=watch.elapsed(),
                       mb_per_s=progress.rate())

    def _binding(self, ckpt_id: str, name: str) -> Binding:
        """What a sealed object is bound to: this workload, this checkpoint, this name."""
        return Binding(self.prefix, ckpt_id, name)
