"""Committing a checkpoint: every file, then the manifest, then the pointer.

The manifest is written only after every file it lists is seen in the store, and the pointer
moves only after the manifest (pointer.py: against the version this pod knows, so a pod of the
same name that moved it meanwhile wins and this one says so). A checkpoint cut off anywhere
before the pointer moved is never restored; one whose pointer write is cut off after landing is
read back. Housekeeping (retention.py) is not part of a commit: it runs once nothing waits for
it. Part of CheckpointRepository (repository.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from crikpy import log
from crikpy.checkpoint import codec
from crikpy.checkpoint.layout import MANIFEST
from crikpy.checkpoint.manifest import FileEntry, Manifest, WorkloadInfo
from crikpy.checkpoint.sealed import encryption_record, seal_bytes
from crikpy.deadline import Deadline
from crikpy.errors import CorruptCheckpoint, CrikpyError, StoreError
from crikpy.stores import Digest, PreconditionFailed, Store
from crikpy.stores.base import Stream
from crikpy.tasks import Task, TaskGroup, run_each

# A checkpoint is a few big pages images and dozens of small ones, each a request or two: moved
# one after another (up or down), the small ones cost a round trip each (20-50 ms on S3). The
# store's part budget bounds the memory, however many move at once.
FILES_AT_ONCE = 8


class Committing:
    def open_upload(self, ckpt_id: str, rel: str, deadline: Deadline | None,
                    uploads: TaskGroup, compress: bool = False) -> "Upload":
        """Upload a file of checkpoint `ckpt_id` while it is being written (CRIU's pages):
        compressed if asked, then sealed if a key is set; a task of `uploads`, which waits for
        a free slot first (the writer waits meanwhile)."""
        stream = Stream(rel)
        source = codec.encode(stream, self.keys, self._binding(ckpt_id, f"files/{rel}"),
                              compress)
        progress = log.TransferProgress("upload", 0, id=ckpt_id, file=rel)
        upload = Upload(self.store, self.layout.file(ckpt_id, rel), rel, stream, source,
                        deadline, progress, codec.codec_of(compress))
        upload.task = uploads.submit(upload.run, deadline=deadline, cleanup=upload.fail)
        return upload

    def commit(self, staging: Path, ckpt_id: str, info: WorkloadInfo,
               deadline: Deadline | None = None, streamed: Iterable["Upload"] = ()) -> Manifest:
        """Upload every file under `staging`, then the manifest, then move the pointer.

        `info` says what was checkpointed (the manifest's other fields); `streamed` are files
        uploaded while they were written, which are waited for here. Raises RaceLost when the
        pointer moved since this process read it; the checkpoint stays committed but not latest.
        Raises DeadlineExceeded when `deadline` passes first; the pointer is then untouched.
        """
        watch = log.Stopwatch()
        rels = _walk_files(staging)
        sources = {rel: codec.encode(str(staging / rel), self.keys,
                                     self._binding(ckpt_id, f"files/{rel}"), compress=False)
                   for rel in rels}
        progress = log.TransferProgress("upload", sum(s.size for s in sources.values()),
                                        id=ckpt_id)

        def upload(rel: str) -> FileEntry:
            digest = self.store.put_file(self.layout.file(ckpt_id, rel), sources[rel],
                                         progress=progress, deadline=deadline)
            return FileEntry(rel, digest.size, digest.sha256)
        files = run_each(upload, list(sources), "upload", FILES_AT_ONCE)
        for upload in streamed:
            digest = upload.result()
            files.append(FileEntry(upload.rel, digest.size, digest.sha256, upload.codec))
            rels.append(upload.rel)
        files.sort(key=lambda f: f.path)
        encryption = None if self.keys is None else encryption_record(self.keys.sealing_id)
        manifest = Manifest(id=ckpt_id, files=files, encryption=encryption, **info.fields())
        self._log.info("checkpoint.uploaded", id=ckpt_id, files=len(files),
                       bytes=manifest.total_bytes, seconds=watch.elapsed(),
                       mb_per_s=progress.rate())
        self._check_all_present(ckpt_id, rels, deadline)
        self._write_manifest(manifest, deadline)
        self._write_pointer(ckpt_id, deadline)
        self._log.info("checkpoint.committed", id=ckpt_id, bytes=manifest.total_bytes,
                       seconds=watch.elapsed())
        return manifest

    def _check_all_present(self, ckpt_id: str, rels: list[str],
                           deadline: Deadline | None) -> None:
        """A racing pod's retention may have deleted files meanwhile: never commit a hole."""
        base = f"{self.layout.checkpoint(ckpt_id)}/files/"
        present = {key[len(base):] for key in self.store.list(base, deadline=deadline)}
        missing = sorted(set(rels) - present)
        if missing:
            raise StoreError(f"checkpoint {ckpt_id}: {len(missing)} uploaded files are missing "
                             f"from {self.store.url} (first: {missing[0]}); another pod with the "
                             "same name may have deleted them; not committing")

    def _write_manifest(self, manifest: Manifest, deadline: Deadline | None) -> None:
        key, body = self.layout.record(manifest.id, MANIFEST), manifest.to_json()
        _check_reads_back(manifest.id, body)
        if self.keys is not None:
            body = seal_bytes(body, self.keys, self._binding(manifest.id, MANIFEST))
        try:
            self.store.put_bytes(key, body, if_absent=True, deadline=deadline)
        except PreconditionFailed:
            back = self.store.get_bytes(key, deadline=deadline)  # a lost answer: ours?
            if back is None or back.data != body:
                raise StoreError(f"checkpoint {manifest.id} already has another manifest in "
                                 f"{self.store.url}; not committing") from None


class Upload:
    """One file uploaded while another thread writes it (CRIU's pages), in bounded memory:
    `write` blocks while the store is behind, and raises once the upload failed. `run` is the
    upload itself, a task of the dump's task group (crikpy.tasks)."""

    def __init__(self, store: Store, key: str, rel: str, stream: Stream, source,
                 deadline: Deadline | None, progress: log.TransferProgress,
                 codec_name: str | None = None) -> None:
        self.rel, self.codec = rel, codec_name
        self._store, self._key, self._source = store, key, source
        self._stream, self._deadline, self._progress = stream, deadline, progress
        self.task: Task | None = None

    def run(self) -> Digest:
        try:
            return self._store.put_file(self._key, self._source, deadline=self._deadline,
                                        progress=self._progress)
        except BaseException as e:
            self._stream.fail(e)  # the writer (CRIU's pages) stops too
            raise

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def end(self) -> None:
        self._stream.end()

    def fail(self, error: BaseException) -> None:
        """Stop the upload; its store cleans up (an aborted multipart upload, a removed file)."""
        self._stream.fail(error)

    def result(self) -> Digest:
        return self.task.result()


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
