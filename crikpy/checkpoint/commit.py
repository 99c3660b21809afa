"""Write-then-commit over any Store: checkpoints, the latest pointer, quarantine and retention.

Layout under the workload's key (`namespace/name`):

    checkpoints/<id>/files/...        CRIU images, CRIU's log, copies of additional paths
    checkpoints/<id>/manifest.json    written after every file: its presence means "committed"
    checkpoints/<id>/quarantine.json  a checkpoint set aside, with the reason
    checkpoints/<id>/attempts.json    restores of it begun and failed (bounds a restart loop)
    latest.json                       {"id": ...}: the one checkpoint a start restores

A checkpoint counts only once its manifest exists, and the manifest is written only after every
file it lists is seen in the store; a start restores only what the pointer names, so a dump or
upload cut off half-way is never seen by a restore. The pointer moves with a conditional write
against the version this process last saw: when another process with the same name moved it
meanwhile, this one loses the race, keeps its checkpoint aside and says so. A conditional write
whose answer was lost is read back before anything is decided. Once the pointer names the
checkpoint it is committed: housekeeping after that (retention, sweeping leftovers) is best
effort and bounded, and its failures are logged, never raised. docs/format.md is the spec.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from crikpy import log
from crikpy.checkpoint import keys as keys_mod
from crikpy.checkpoint import pointer
from crikpy.checkpoint.framed import CODEC, Compressed, Decompressed
from crikpy.checkpoint.keys import KeyRing
from crikpy.checkpoint.manifest import FileEntry, Manifest, id_age_seconds, is_id
from crikpy.checkpoint.sealed import (AuthenticationFailed, Binding, OpenedFile, SealedFile,
                                      encryption_record, is_sealed, open_bytes, seal_bytes,
                                      sealing_key_id)
from crikpy.deadline import Deadline
from crikpy.errors import (CheckpointNotFound, ConfigError, CorruptCheckpoint, CrikpyError,
                           NewerCheckpoint, RaceLost, StoreError)
from crikpy.settings import Settings
from crikpy.budget import MAX_RESTORE_ATTEMPTS
from crikpy.stores import Digest, MissingObject, PreconditionFailed, Store, open_store
from crikpy.stores.base import LocalFile, Stream, as_sink

COMMITTED, QUARANTINED, INCOMPLETE, CORRUPT = "committed", "quarantined", "incomplete", "corrupt"
NEWER = "newer-format"  # written by a newer crikpy: never touched by this one
ENCRYPTED = "encrypted"  # sealed with a key this process does not hold
# what `release` did
RELEASED_LATEST, RELEASED_NOT_LATEST, NOT_QUARANTINED = "latest", "not latest", "not quarantined"
# A checkpoint is a few big pages images and dozens of small ones, each a request or two: moved
# one after another, the small ones cost a round trip each (20-50 ms on S3). The store's part
# budget bounds the memory, however many move at once.
FILES_AT_ONCE = 8


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    id: str
    status: str
    latest: bool
    created_at: str | None = None
    total_bytes: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class CheckpointRepository:
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
        self.keep = keep
        self.stale_after = stale_after
        # Who this pod start is in the pointers it writes, and the pointer as it last knew it
        # its own (found at its start, or written by it). Both cross the lean re-exec.
        self.owner = owner or pointer.new_owner()
        self.known: pointer.Pointer | None = None
        self._log = log.get().bind(store=store.url, workload=workload_key)

    # keys
    def _ckpt(self, ckpt_id: str) -> str:
        if not is_id(ckpt_id):  # an operator's typo, or a store's garbage: never a key
            raise CheckpointNotFound(f"'{ckpt_id[:80]}' is not a checkpoint id (they look like "
                                     "20261122T142301.123Z-1a2b3c4d); see `crikpy checkpoints "
                                     "list`")
        return f"{self.prefix}/checkpoints/{ckpt_id}"

    @property
    def _pointer(self) -> str:
        return f"{self.prefix}/latest.json"

    # the latest pointer (crikpy.checkpoint.pointer says who may move it, and how)
    def _read_pointer(self, deadline: Deadline | None = None) -> pointer.Pointer:
        """The pointer as it is now. The first read is what this pod found at its start, the
        pointer it may move or clear as long as it is unchanged."""
        now = pointer.read(self.store, self._pointer, deadline)
        if self.known is None:
            self.known = now
        return now

    def _write_pointer(self, ckpt_id: str | None, deadline: Deadline | None = None,
                       **context) -> None:
        """Move the pointer from what this pod knows it to be; RaceLost if another moved it."""
        seen = self.known if self.known is not None else self._read_pointer(deadline)
        self.known = pointer.write(self.store, self._pointer, seen, ckpt_id, self.owner,
                                   _now(), deadline, **context)

    def latest_id(self, deadline: Deadline | None = None) -> str | None:
        """The checkpoint the pointer names; CorruptCheckpoint when it cannot be read."""
        return pointer.raise_if_garbled(self._read_pointer(deadline))

    def latest(self) -> Manifest | None:
        """The manifest the pointer names, verified; None when there is nothing to restore."""
        ckpt_id = self.latest_id()
        if ckpt_id is None:
            return None
        return self.manifest(ckpt_id)

    def manifest(self, ckpt_id: str, deadline: Deadline | None = None) -> Manifest:
        obj = self.store.get_bytes(f"{self._ckpt(ckpt_id)}/manifest.json", deadline=deadline)
        if obj is None:
            if any(True for _ in self.store.list(self._ckpt(ckpt_id) + "/", deadline=deadline)):
                raise CorruptCheckpoint(f"checkpoint {ckpt_id} has no manifest (never committed)")
            raise CheckpointNotFound(
                f"checkpoint {ckpt_id} is not in {self.store.url} under {self.prefix}; "
                "see `crikpy checkpoints list`"
            )
        data = self._open_manifest(ckpt_id, obj.data)
        manifest = Manifest.from_json(data, where=f"of checkpoint {ckpt_id}")
        if manifest.id != ckpt_id:
            raise CorruptCheckpoint(f"manifest of checkpoint {ckpt_id} names another id {manifest.id}")
        if self.keys is not None and manifest.encryption != encryption_record(
                sealing_key_id(obj.data)):
            raise AuthenticationFailed(f"authentication failed: the manifest of checkpoint "
                                       f"{ckpt_id} says it was sealed otherwise than it was")
        return manifest

    def clear_latest(self, reason: str, deadline: Deadline | None = None, *,
                     naming: str | None = None) -> pointer.Cleared:
        """Point at nothing, so the next start is cold; keeps the checkpoints themselves.

        Only while the pointer is this pod's (pointer.is_ours), never over what another pod
        wrote since; with `naming`, only while it names that checkpoint (one set aside or
        deleted). Logs what it did, and returns it.
        """
        now = pointer.read(self.store, self._pointer, deadline)
        if now.id is None:
            result = pointer.Cleared.ALREADY_CLEAR
        elif not (now.id == naming if naming is not None
                  else pointer.is_ours(now, self.owner, self.known)):
            result = pointer.Cleared.NOT_OURS
        else:
            try:
                self.known = pointer.write(self.store, self._pointer, now, None, self.owner,
                                           _now(), deadline, reason=reason)
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

    # committing
    def open_upload(self, ckpt_id: str, rel: str, deadline: Deadline | None,
                    compress: bool = False) -> "Upload":
        """Upload a file of checkpoint `ckpt_id` while it is being written (CRIU's pages):
        compressed if asked, then sealed if a key is set."""
        stream = Stream(rel)
        source = Compressed(stream) if compress else stream
        if self.keys is not None:
            source = SealedFile(source, self.keys, self._binding(ckpt_id, f"files/{rel}"))
        progress = log.TransferProgress("upload", 0, id=ckpt_id, file=rel)
        return Upload(self.store, f"{self._ckpt(ckpt_id)}/files/{rel}", rel, stream, source,
                      deadline, progress, CODEC if compress else None)

    def commit(self, staging: Path, ckpt_id: str, describe: dict,
               deadline: Deadline | None = None, streamed: Iterable["Upload"] = ()) -> Manifest:
        """Upload every file under `staging`, then the manifest, then move the pointer.

        `describe` holds the Manifest's fields other than id and files; `streamed` are files
        uploaded while they were written, which are waited for here. Raises RaceLost when the
        pointer moved since this process read it; the checkpoint stays committed but not latest.
        Raises DeadlineExceeded when `deadline` passes first; the pointer is then untouched.
        """
        watch = log.Stopwatch()
        rels = _walk_files(staging)
        sources = {rel: self._source(staging / rel, ckpt_id, rel) for rel in rels}
        progress = log.TransferProgress("upload", sum(s.size for s in sources.values()),
                                        id=ckpt_id)

        def upload(rel: str) -> FileEntry:
            digest = self.store.put_file(f"{self._ckpt(ckpt_id)}/files/{rel}", sources[rel],
                                         progress=progress, deadline=deadline)
            return FileEntry(rel, digest.size, digest.sha256)
        files = _each_at_once(upload, list(sources))
        for upload in streamed:
            digest = upload.result()
            files.append(FileEntry(upload.rel, digest.size, digest.sha256, upload.codec))
            rels.append(upload.rel)
        files.sort(key=lambda f: f.path)
        encryption = None if self.keys is None else encryption_record(self.keys.sealing_id)
        manifest = Manifest(id=ckpt_id, files=files, encryption=encryption, **describe)
        self._log.info("checkpoint.uploaded", id=ckpt_id, files=len(files),
                       bytes=manifest.total_bytes, seconds=watch.elapsed(),
                       mb_per_s=progress.rate())
        self._check_all_present(ckpt_id, rels, deadline)
        self._write_manifest(manifest, deadline)
        self._write_pointer(ckpt_id, deadline)
        self._log.info("checkpoint.committed", id=ckpt_id, bytes=manifest.total_bytes,
                       seconds=watch.elapsed())
        return manifest

    def _check_all_present(self, ckpt_id: str, rels: list[str], deadline: Deadline | None) -> None:
        """A racing pod's retention may have deleted files meanwhile: never commit a hole."""
        base = f"{self._ckpt(ckpt_id)}/files/"
        present = {key[len(base):] for key in self.store.list(base, deadline=deadline)}
        missing = sorted(set(rels) - present)
        if missing:
            raise StoreError(f"checkpoint {ckpt_id}: {len(missing)} uploaded files are missing "
                             f"from {self.store.url} (first: {missing[0]}); another pod with the "
                             "same name may have deleted them; not committing")

    # sealing: what is stored when a key is set
    def _binding(self, ckpt_id: str, name: str) -> Binding:
        return Binding(self.prefix, ckpt_id, name)

    def _source(self, path: Path, ckpt_id: str, rel: str):
        if self.keys is None:
            return LocalFile(str(path))
        return SealedFile(str(path), self.keys, self._binding(ckpt_id, f"files/{rel}"))

    def _open_manifest(self, ckpt_id: str, data: bytes) -> bytes:
        """The manifest's JSON; ConfigError when it is sealed and no key here opens it."""
        binding = self._binding(ckpt_id, "manifest.json")
        if is_sealed(data) or self.keys is not None:
            return open_bytes(data, self.keys, binding)
        return data

    def _write_manifest(self, manifest: Manifest, deadline: Deadline | None) -> None:
        key, body = f"{self._ckpt(manifest.id)}/manifest.json", manifest.to_json()
        _check_reads_back(manifest.id, body)
        if self.keys is not None:
            body = seal_bytes(body, self.keys, self._binding(manifest.id, "manifest.json"))
        try:
            self.store.put_bytes(key, body, if_absent=True, deadline=deadline)
        except PreconditionFailed:
            back = self.store.get_bytes(key, deadline=deadline)  # a lost answer: ours?
            if back is None or back.data != body:
                raise StoreError(f"checkpoint {manifest.id} already has another manifest in "
                                 f"{self.store.url}; not committing") from None

    def housekeeping(self, just_committed: str, deadline: Deadline) -> None:
        """Retention and sweeping after a commit, once nothing waits for it (the tree runs on,
        or is gone): bounded, and never a failure of the commit."""
        try:
            self.prune(just_committed, deadline)
            self.store.sweep(f"{self.prefix}/", older_than=self.stale_after, deadline=deadline)
        except Exception as e:  # noqa: BLE001  (committed is committed, whatever fails here)
            self._log.warning("checkpoint.housekeeping_failed", id=just_committed,
                              error=f"{type(e).__name__}: {e}",
                              detail="the checkpoint is committed; leftovers are retried at the "
                                     "next commit")

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
            sink = str(target)
            if entry.codec is not None:
                sink = Decompressed(as_sink(sink), f"checkpoint {manifest.id}: {entry.path}")
            if keys is not None:
                sink = OpenedFile(sink, keys, self._binding(manifest.id, f"files/{entry.path}"))
            try:
                digest = self.store.get_file(f"{self._ckpt(manifest.id)}/files/{entry.path}",
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
        _each_at_once(download, sorted(manifest.files, key=lambda f: -f.size))
        self._log.info("checkpoint.fetched", id=manifest.id, files=len(manifest.files),
                       bytes=manifest.total_bytes, seconds=watch.elapsed(),
                       mb_per_s=progress.rate())

    # inspection and housekeeping
    def list(self, deadline: Deadline | None = None) -> list[CheckpointInfo]:
        keys_by_id: dict[str, set[str]] = {}
        base = f"{self.prefix}/checkpoints/"
        for key in self.store.list(base, deadline=deadline):
            ckpt_id, _, rest = key[len(base):].partition("/")
            if is_id(ckpt_id):  # anything else there is not crikpy's
                keys_by_id.setdefault(ckpt_id, set()).add(rest)
        try:
            latest = self.latest_id(deadline)
        except CorruptCheckpoint as e:  # the checkpoints are still worth listing
            self._log.warning("latest.garbled", problem=str(e),
                              consequence="the next start clears it and starts cold")
            latest = None
        infos = []
        for ckpt_id in sorted(keys_by_id):
            infos.append(self._info(ckpt_id, keys_by_id[ckpt_id], latest, deadline))
        return infos

    def _info(self, ckpt_id: str, keys: set[str], latest: str | None,
              deadline: Deadline | None = None) -> CheckpointInfo:
        is_latest = ckpt_id == latest
        if "manifest.json" not in keys:
            return CheckpointInfo(ckpt_id, INCOMPLETE, is_latest)
        created = size = problem = None
        try:
            m = self.manifest(ckpt_id, deadline)
            created, size = m.created_at, m.total_bytes
        except CorruptCheckpoint as e:
            status, problem = CORRUPT, str(e)
        except NewerCheckpoint as e:
            return CheckpointInfo(ckpt_id, NEWER, is_latest, reason=str(e))
        except ConfigError as e:
            return CheckpointInfo(ckpt_id, ENCRYPTED, is_latest, reason=str(e))
        if "quarantine.json" in keys:  # set aside, whatever else is wrong with it
            record = self._record(ckpt_id, "quarantine.json", deadline)
            reason = record.get("reason") if record is not None else "unreadable quarantine record"
            return CheckpointInfo(ckpt_id, QUARANTINED, is_latest, created, size, str(reason))
        if problem:
            return CheckpointInfo(ckpt_id, status, is_latest, reason=problem)
        return CheckpointInfo(ckpt_id, COMMITTED, is_latest, created, size)

    def _record(self, ckpt_id: str, name: str, deadline: Deadline | None = None) -> dict | None:
        """A small JSON record beside a checkpoint; {} when absent, None when unreadable."""
        obj = self.store.get_bytes(f"{self._ckpt(ckpt_id)}/{name}", deadline=deadline)
        if obj is None:
            return {}
        try:
            record = json.loads(obj.data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    # restore attempts: a restart loop is bounded by counting them in the store
    def attempts(self, ckpt_id: str, deadline: Deadline | None = None) -> dict:
        record = self._record(ckpt_id, "attempts.json", deadline) or {}
        failures = record.get("failures")
        counted = isinstance(failures, int) and not isinstance(failures, bool) and failures >= 0
        # Capped: the record is not sealed, and no setting counts beyond it.
        return {"failures": min(failures, MAX_RESTORE_ATTEMPTS) if counted else 0,
                "last": str(record.get("last", ""))}

    def record_attempt(self, ckpt_id: str, failures: int, last: str,
                       deadline: Deadline | None = None) -> None:
        body = json.dumps({"failures": failures, "last": last, "at": _now()}).encode()
        self.store.put_bytes(f"{self._ckpt(ckpt_id)}/attempts.json", body, deadline=deadline)

    def forget_attempts(self, ckpt_id: str, deadline: Deadline | None = None) -> None:
        self.store.delete(f"{self._ckpt(ckpt_id)}/attempts.json", deadline=deadline)

    def quarantined(self, ckpt_id: str, deadline: Deadline | None = None) -> bool:
        return self.store.get_bytes(f"{self._ckpt(ckpt_id)}/quarantine.json",
                                    deadline=deadline) is not None

    def previous_committed(self, before: str, deadline: Deadline | None = None) -> str | None:
        """The newest committed (not quarantined) checkpoint older than `before`.

        Raises ConfigError when that one is sealed under a key this pod does not hold: a start
        must not pass over a checkpoint it merely cannot read.
        """
        older = [i for i in self.list(deadline)
                 if i.status in (COMMITTED, ENCRYPTED) and i.id < before]
        if older and older[-1].status == ENCRYPTED:
            raise ConfigError(older[-1].reason)
        return older[-1].id if older else None

    def release(self, ckpt_id: str) -> str:
        """Take a checkpoint out of quarantine and reset its failed attempts; a released one
        becomes latest unless a newer one is. One that was not quarantined only has its
        attempts reset: the pointer may have left it on purpose (the workload ended after it).

        Returns RELEASED_LATEST, RELEASED_NOT_LATEST or NOT_QUARANTINED.
        """
        self.manifest(ckpt_id)  # it must exist and read as a committed checkpoint
        base = self._ckpt(ckpt_id)
        latest = self.latest_id()  # before any change: a garbled pointer changes nothing
        was_quarantined = self.quarantined(ckpt_id)
        self.store.delete(f"{base}/attempts.json")
        if not was_quarantined:
            return NOT_QUARANTINED
        self.store.delete(f"{base}/quarantine.json")
        if latest is None or latest < ckpt_id:
            self.point_at(ckpt_id, reason=f"checkpoint {ckpt_id} released from quarantine")
            return RELEASED_LATEST
        return RELEASED_LATEST if latest == ckpt_id else RELEASED_NOT_LATEST

    def quarantine(self, ckpt_id: str, reason: str, criu_log: bytes | None = None,
                   deadline: Deadline | None = None) -> None:
        """Set a checkpoint aside so no start tries it again; the pointer stops naming it."""
        base = self._ckpt(ckpt_id)
        if criu_log:
            self.store.put_bytes(f"{base}/restore.log", criu_log, deadline=deadline)
        self.store.put_bytes(f"{base}/quarantine.json",
                             json.dumps({"reason": reason, "at": _now()}).encode(),
                             deadline=deadline)
        self.clear_latest(f"checkpoint {ckpt_id} quarantined", deadline, naming=ckpt_id)
        self._log.warning("checkpoint.quarantined", id=ckpt_id, reason=reason)

    def delete(self, ckpt_id: str) -> None:
        keys = list(self.store.list(self._ckpt(ckpt_id) + "/"))
        if not keys:
            raise CheckpointNotFound(
                f"checkpoint {ckpt_id} is not in {self.store.url} under {self.prefix}; "
                "see `crikpy checkpoints list`"
            )
        self.clear_latest(f"checkpoint {ckpt_id} deleted", naming=ckpt_id)
        self._delete_keys(keys)

    def _delete_keys(self, keys: Iterable[str], deadline: Deadline | None = None) -> None:
        # Manifest first: a checkpoint whose deletion is cut off is "incomplete", never half-restorable.
        for key in sorted(keys, key=lambda k: not k.endswith("/manifest.json")):
            self.store.delete(key, deadline=deadline)

    def prune(self, just_committed: str, deadline: Deadline | None = None) -> None:
        """Keep the newest `keep` committed and `keep` quarantined checkpoints (and the latest).

        Incomplete ones go too, but only once their writer must be dead (`stale_after`): a racing
        pod of the same name may still be uploading a newer one.
        """
        infos = self.list(deadline)
        doomed: set[str] = set()
        for status in (COMMITTED, QUARANTINED):
            same = [i for i in infos if i.status == status]
            doomed |= {i.id for i in same[: max(0, len(same) - self.keep)] if not i.latest}
        doomed |= {i.id for i in infos if i.status == INCOMPLETE and i.id != just_committed
                   and not i.latest and id_age_seconds(i.id) > self.stale_after}
        for ckpt_id in sorted(doomed):
            if deadline is not None:
                deadline.check("retention")
            self._delete_keys(self.store.list(self._ckpt(ckpt_id) + "/", deadline=deadline),
                              deadline)
            self._log.info("checkpoint.pruned", id=ckpt_id)


T = TypeVar("T")
R = TypeVar("R")


def _each_at_once(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """fn over items, FILES_AT_ONCE at a time; results in the items' order. The first failure
    is raised once the calls under way have ended (those not begun are dropped)."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(FILES_AT_ONCE, len(items)),
                            thread_name_prefix="file") as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f.exception() for f in done if f.exception() is not None), None)
        if failed is not None:
            pool.shutdown(cancel_futures=True)  # drop those not begun, wait for those under way
            raise failed
        return [future.result() for future in futures]


def _check_reads_back(ckpt_id: str, body: bytes) -> None:
    """A manifest its own reader would refuse is a failed checkpoint, not a committed one that
    the next start quarantines: the workload then gets its SIGTERM and shuts down cleanly."""
    try:
        Manifest.from_json(body, where=ckpt_id)
    except CrikpyError as e:
        raise CorruptCheckpoint(f"checkpoint {ckpt_id}: its manifest would not read back "
                                f"({e}); not committing") from None


def _walk_files(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class Upload:
    """One file uploaded by a thread of its own while another thread writes it, in bounded
    memory: `write` blocks while the store is behind (and raises once the upload failed)."""

    def __init__(self, store: Store, key: str, rel: str, stream: Stream, source,
                 deadline: Deadline | None, progress: log.TransferProgress,
                 codec: str | None = None) -> None:
        self.rel, self._stream, self.codec = rel, stream, codec
        self._digest: Digest | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run,
                                        args=(store, key, source, deadline, progress),
                                        name=f"upload {rel}", daemon=True)
        self._thread.start()

    def _run(self, store: Store, key: str, source, deadline: Deadline | None,
             progress: log.TransferProgress) -> None:
        try:
            self._digest = store.put_file(key, source, deadline=deadline, progress=progress)
        except BaseException as e:  # noqa: BLE001  (handed to the writer and to result())
            self._error = e
            self._stream.fail(e)

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def end(self) -> None:
        self._stream.end()

    def fail(self, error: BaseException) -> None:
        """Stop the upload; its store cleans up (an aborted multipart upload, a removed file)."""
        self._stream.fail(error)

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> Digest:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


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
        """Open the store in a helper thread; what fails there is raised at first use."""
        if self._repo is None:
            threading.Thread(target=self._open, args=(True,), name="store-warm",
                             daemon=True).start()

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
    return CheckpointRepository(open_store(settings.store, settings), settings.workload_key,
                                settings.keep_checkpoints, settings.longest_checkpoint, ring,
                                owner)
