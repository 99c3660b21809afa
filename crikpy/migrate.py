"""Checkpoint and restore, end to end, for one workload.

Checkpoint: CRIU dumps the tree into a local staging dir (the tree left frozen), additional paths
are copied beside the images, and the repository commits it all to the store.
Restore: the repository fetches the latest committed checkpoint and verifies every file, additional
paths go back in place, and CRIU restores the tree as this process's child with its stdout and
stderr reattached to ours.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import socket
from pathlib import Path

from crikpy import log, procs
from crikpy.checkpoint.commit import CheckpointRepository
from crikpy.checkpoint.manifest import Manifest, new_id
from crikpy.criu import options, session
from crikpy.deadline import Deadline
from crikpy.errors import CrikpyError
from crikpy.settings import Settings

IMAGES = "images"  # CRIU's images and its log, inside a checkpoint
EXTRA = "extra"  # copies of additional paths, by absolute path, inside a checkpoint

_log = log.get()


class Migrator:
    """Takes and restores checkpoints of one workload, as `settings` describe it."""

    def __init__(self, settings: Settings, repo: CheckpointRepository) -> None:
        self.settings = settings
        self.repo = repo

    def _fresh_dir(self, label: str) -> Path:
        path = self.settings.work_dir / label
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def checkpoint(self, pid: int, command: list[str], deadline: Deadline,
                   leave_running: bool = False) -> Manifest:
        """Dump the tree at `pid` and commit it by `deadline`.

        On return the tree is still frozen, unless `leave_running` (a periodic checkpoint). If
        CRIU's dump fails, CRIU has let the tree run on; if anything after the dump fails, the
        tree is frozen and the caller decides (SIGCONT). Raises CrikpyError either way.
        """
        ckpt_id = new_id()
        staging = self._fresh_dir(f"dump-{ckpt_id}")
        try:
            stdio = procs.stdio_targets(pid)
            for path in self.settings.inotify_incompatible_paths:
                shutil.rmtree(path, ignore_errors=True)
            watch = log.Stopwatch()
            dump_seconds = self._dump(pid, staging / IMAGES, staging / EXTRA, leave_running)
            _log.info("checkpoint.dumped", id=ckpt_id, pid=pid, seconds=dump_seconds,
                      bytes=_tree_size(staging), total_seconds=watch.elapsed())
            describe = dict(
                name=self.repo.prefix,
                created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="milliseconds"),
                command=list(command),
                root_pid=pid,
                stdio=stdio,
                additional_paths=list(self.settings.additional_paths),
                criu_version=session.version(self.settings.criu_binary),
                kernel=platform.release(),
                hostname=socket.gethostname(),
                dump_seconds=dump_seconds,
            )
            deadline.check("the dump")
            return self.repo.commit(staging, ckpt_id, describe, deadline)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _dump(self, pid: int, images: Path, extra: Path, leave_running: bool) -> float:
        images.mkdir()
        watch = log.Stopwatch()

        def on_notify(stage: str, notified_pid: int) -> bool:
            # "post-dump" comes while the tree is still frozen: the one moment when the files it
            # uses are consistent with the memory just dumped.
            if stage == "post-dump":
                self._copy_additional_paths(extra)
            return session.log_event(stage, notified_pid)

        fd = os.open(images, os.O_DIRECTORY)
        try:
            req = options.dump(pid, fd, leave_running=leave_running)
            session.call(req, criu_binary=self.settings.criu_binary, on_notify=on_notify,
                         log_path=images / req.opts.log_file)
        finally:
            os.close(fd)
        return watch.elapsed()

    def _copy_additional_paths(self, extra: Path) -> None:
        for path in self.settings.additional_paths:
            source = Path(path)
            if not source.exists():
                _log.info("additional_path.absent", path=path)
                continue
            target = extra / source.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target)

    def restore(self, manifest: Manifest) -> int:
        """Fetch, verify and restore `manifest`'s checkpoint; returns the restored root's PID.

        Raises CrikpyError (CorruptCheckpoint, CriuError, StoreError) when it cannot; nothing is
        left running then.
        """
        staging = self._fresh_dir(f"restore-{manifest.id}")
        try:
            self.repo.fetch(manifest, staging)
            self._put_back_additional_paths(staging / EXTRA, manifest.additional_paths)
            watch = log.Stopwatch()
            pid = self._restore_images(staging / IMAGES, manifest.stdio)
            _log.info("restore.done", id=manifest.id, pid=pid, seconds=watch.elapsed(),
                      peak_rss_mib=log.peak_rss_mib())
            return pid
        except CrikpyError as e:
            e.restore_log = _read_or_none(staging / IMAGES / "restore.log")
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _put_back_additional_paths(self, extra: Path, paths: list[str]) -> None:
        # Path by path, never the tree from "/": copying directory modes onto "/" or "/var" would
        # change the container's own directories, which CRIU then finds different from the dump.
        for path in paths:
            saved = extra / Path(path).relative_to("/")
            if saved.is_dir():
                shutil.copytree(saved, path, symlinks=True, dirs_exist_ok=True)
            elif saved.exists():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(saved, path)

    def _restore_images(self, images: Path, stdio: dict[str, str]) -> int:
        # The workload's stdout/stderr were pipes of the old container; CRIU swaps each for the
        # fd we hold at the same number, so output goes on to this container's log.
        inherit: dict[str, int] = {}
        held: list[int] = []
        for fd_text, target in sorted(stdio.items()):
            if target.startswith(("pipe:", "socket:")) and target not in inherit:
                dup = os.dup(int(fd_text))
                held.append(dup)
                inherit[target] = dup
        fd = os.open(images, os.O_DIRECTORY)
        held.append(fd)
        try:
            req = options.restore(fd, inherit)
            resp = session.call(req, criu_binary=self.settings.criu_binary, pass_fds=held,
                                on_notify=session.log_event, log_path=images / req.opts.log_file)
        finally:
            for h in held:
                os.close(h)
        return resp.restore.pid


def _tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
