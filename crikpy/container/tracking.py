"""The container as crikpy found it at start, and what that tells each dump and restore.

`ContainerFiles.at_start` lists the root filesystem before anything changes it (the baseline)
and says which mounts are carried which way (`files.mounts`); after the lean re-exec,
`ContainerFiles.resumed` finds the same baseline on disk. A dump asks it to capture the
workload's changes and for the program's identity; a restore asks it to put files back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crikpy import log
from crikpy.container import changes, identity, mounts
from crikpy.container.snapshot import Snapshot, TooManyFiles, entry

BASELINE = "baseline.json"  # in the work dir: the listing at start
IMAGE = "image.json"  # in the work dir: the baseline's digests

_log = log.get()


class ContainerFiles:
    def __init__(self, settings) -> None:
        own = [str(settings.work_dir), *settings.additional_paths]
        if settings.store.startswith("file://"):
            own.append(settings.store.removeprefix("file://"))
        self.scope = changes.Scope.of(mounts.current(), own, settings.max_container_files)
        self.work_dir = settings.work_dir
        self.max_bytes = settings.max_changed_mib * 1024 * 1024
        self.problem: str | None = None  # why checkpoints must be refused (a baseline too large)
        self._digests: dict[str, str] | None = None  # the image's, once read or computed

    @classmethod
    def at_start(cls, settings) -> "ContainerFiles":
        files = cls(settings)
        watch = log.Stopwatch()
        try:
            baseline = files.scope.listing()
        except TooManyFiles as e:
            files.problem = str(e)
            _log.error("files.too_many", error=str(e), consequence="checkpoints are refused")
            return files
        files._digests = baseline.group_digests()
        try:
            settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            baseline.save(settings.work_dir / BASELINE)
            (settings.work_dir / IMAGE).write_text(json.dumps(files._digests))
        except OSError as e:
            files.problem = f"cannot keep the container's baseline in {settings.work_dir}: {e}"
            _log.error("files.baseline_unsaved", error=str(e), consequence="checkpoints are refused")
            return files
        _log.info("files.mounts", changes=["/"], whole=list(files.scope.whole),
                  left_alone=sorted(files.scope.left_alone), entries=len(baseline.entries),
                  seconds=watch.elapsed())
        return files

    @classmethod
    def resumed(cls, settings) -> "ContainerFiles":
        files = cls(settings)
        if not (settings.work_dir / BASELINE).exists():
            files.problem = "the container's baseline from the start is gone from the work dir"
        return files

    def image_digests(self) -> dict[str, str]:
        if self._digests is None:
            try:
                self._digests = json.loads((self.work_dir / IMAGE).read_text())
            except (OSError, ValueError):
                return {}
        return self._digests

    def identity(self, root: int | None, command: list[str], env: dict[str, str],
                 settings) -> identity.Identity:
        """This start's (root None) or a running tree's program."""
        mapped: dict[str, list[int]] = {}
        if root is not None:
            baseline = self._baseline()
            for path, value in identity.mapped_files(root).items():
                try:
                    unchanged = baseline.entries.get(path) == entry(os.lstat(path))
                except OSError:
                    unchanged = False
                if unchanged:  # else it is the workload's own file, carried with it
                    mapped[path] = value
        return identity.Identity(self.image_digests(), mapped, identity.command(command),
                                 identity.environment(env, settings.version_ignore_env),
                                 settings.pod_revision or None)

    def _baseline(self) -> Snapshot:
        if self.problem:
            raise TooManyFiles(self.problem)
        return Snapshot.load(self.work_dir / BASELINE)

    def capture(self, into: Path) -> changes.Captured:
        watch = log.Stopwatch()
        captured = changes.capture(self.scope, self._baseline(), into, self.max_bytes)
        _log.info("files.captured", entries=captured.entries, bytes=captured.bytes,
                  deleted=captured.deleted, archive_bytes=(into / changes.ARCHIVE).stat().st_size,
                  seconds=watch.elapsed())
        return captured

    def put_back(self, staging: Path, *, authenticated: bool) -> changes.PutBack | None:
        return changes.put_back(staging, self.scope, authenticated=authenticated)
