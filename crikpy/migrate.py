"""Checkpoint and restore, end to end, for one workload.

Checkpoint: a tree that a fresh container could not restore (one on a terminal, a limit the
node would not grant, ...) is refused before the dump. CRIU dumps the tree (left frozen) while
its pages stream to the store; in the same frozen instant the workload's changes to the
container's files (crikpy.container) and the additional paths are packed beside the images; the
TCP connections leave repair mode (crikpy.criu.repair); the repository commits it all with the
program's identity in the manifest.
Restore: the repository fetches a committed checkpoint and verifies every file, the container's
files and additional paths go back in place (undone if CRIU then fails), and CRIU restores the
tree as this process's child with its stdout and stderr reattached to ours. A failure says whose
fault it is: NodeFault for this node's, CorruptCheckpoint for the checkpoint's, CriuError when
CRIU does not say.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Callable

from crikpy.paths import remove
from crikpy import budget, log, procs
from crikpy.checkpoint import extras
from crikpy.checkpoint.commit import Upload
from crikpy.checkpoint.manifest import (REDACTED, Manifest, WorkloadInfo, new_id,
                                        recorded_command, timestamp)
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.container import identity
from crikpy.container.tracking import ContainerFiles
from crikpy.criu import options, preflight, repair, session
from crikpy.criu.pageserver import PageReceiver
from crikpy.deadline import ABORT, Deadline
from crikpy.errors import CrikpyError, CriuError, NodeFault
from crikpy.settings import Settings
from crikpy.tasks import TaskGroup

IMAGES = "images"  # CRIU's images and its log, inside a checkpoint
CLEANUP_WAIT_SECONDS = 3.5  # a failed upload's abort, bounded by the store itself
# Page images finishing their upload at once. CRIU sends one image per process and per shared
# memory region, each ended before the next begins; without a bound, 50,000 regions made as many
# threads ("can't start new thread").
UPLOADS_AT_ONCE = 8

_log = log.get()


class Migrator:
    """Takes and restores checkpoints of one workload, as `settings` describe it."""

    def __init__(self, settings: Settings, repo: CheckpointRepository,
                 files: ContainerFiles | None = None, criu_version: str = "unknown") -> None:
        """`files`: the container's files to carry; None carries none (the additional paths
        only). `criu_version`: as asked at the start, never while a tree is frozen."""
        self.settings = settings
        self.repo = repo
        self.files = files
        self.criu_version = criu_version

    def _fresh_dir(self, label: str) -> Path:
        path = self.settings.work_dir / label
        try:
            shutil.rmtree(path, ignore_errors=True)
            try:
                self.settings.work_dir.mkdir(parents=True)
                os.chmod(self.settings.work_dir, 0o700)
            except FileExistsError:
                pass  # the operator's directory (a volume, or /tmp) keeps its mode
            # Dumps and downloads are the whole memory: their own directory is 0700, whatever
            # its parent's mode.
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)
        except OSError as e:
            raise NodeFault(f"cannot make {path} in the work dir: {e.strerror}; set --work-dir "
                            "to a writable directory") from e
        return path

    def checkpoint(self, pid: int, command: list[str], deadline: Deadline,
                   leave_running: bool = False) -> Manifest:
        """Dump the tree at `pid` and commit it by `deadline`.

        On return the tree is still frozen, unless `leave_running` (a periodic checkpoint). If
        CRIU's dump fails, CRIU has let the tree run on; if anything after the dump fails, the
        tree is frozen and the caller decides (SIGCONT). Raises CrikpyError either way.
        """
        warm = getattr(self.repo, "warm", None)  # a lean PID 1's store opens alongside CRIU
        if warm:
            warm()
        terminals = procs.terminal_users(pid)
        if terminals:
            raise CriuError(f"the workload is on a terminal ({terminals[0]}), which CRIU can dump "
                            "but not restore in a new container; run it without a tty (no "
                            "`podman run -t`, no `tty: true`) to checkpoint it")
        ipc = procs.sysv_ipc_objects(pid)
        if ipc:
            fix = ("set ipcNamespace: own (--ipc-namespace own) to give it one, unless it shares "
                   "SysV IPC with another container of the pod"
                   if self.settings.ipc_namespace == "shared" else
                   "crikpy gives it one when it starts it with CAP_SYS_ADMIN (a privileged "
                   "container); `workload.ipc_shared` at its start says why it did not")
            raise CriuError(f"the workload uses SysV IPC ({', '.join(ipc[:3])}) in the "
                            "container's IPC namespace, which it shares with crikpy; CRIU "
                            "carries SysV IPC only in an IPC namespace of the workload's own, so "
                            f"it would be gone after a restore: {fix}")
        strangers = procs.other_users(pid) if procs.lacks_sys_resource() else []
        if strangers:
            raise CriuError(f"{strangers[0]}, not crikpy's uid {os.getuid()} gid {os.getgid()}: "
                            "CRIU cannot dump a process of another user without "
                            "CAP_SYS_RESOURCE, which this container lacks; grant it, or run the "
                            "whole workload as crikpy's user")
        uring = procs.io_uring_users(pid)
        if uring:
            raise CriuError(f"{uring[0]} has an io_uring instance, which CRIU cannot dump. "
                            "Deny io_uring to the workload: a seccomp filter on it that fails "
                            "io_uring_setup, or sysctl kernel.io_uring_disabled=2 on the node. "
                            "Node.js (libuv 1.49+) makes one for every event loop whenever the "
                            "kernel allows it; UV_USE_IO_URING=0 does not stop that")
        self._refuse_what_a_new_container_lacks(pid)
        ckpt_id = new_id()
        staging = self._fresh_dir(f"dump-{ckpt_id}")
        try:
            stdio = procs.stdio_targets(pid)
            if not leave_running:  # crik's rule: those paths break a dump, and the tree stops
                for path in self.settings.inotify_incompatible_paths:
                    remove(path, ignore_errors=True)
            watch = log.Stopwatch()
            dumped = self._dump(ckpt_id, pid, staging, leave_running, deadline)
            _log.info("checkpoint.dumped", id=ckpt_id, pid=pid, seconds=dumped.seconds,
                      pages_bytes=dumped.pages_bytes, local_bytes=_tree_size(staging),
                      total_seconds=watch.elapsed())
            try:
                manifest = self._commit(pid, command, ckpt_id, staging, stdio, dumped, deadline)
            except BaseException:
                if not leave_running:  # the tree runs on: its connections must work
                    repair.leave_repair_mode(pid)
                raise
            if not leave_running:  # the tree dies next: its peers must learn it at once
                repair.leave_repair_mode(pid, reset=True)
            return manifest
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, pid: int, command: list[str], ckpt_id: str, staging: Path,
                stdio: dict[str, str], dumped: "_Dumped", deadline: Deadline) -> Manifest:
        """Describe the dumped tree and commit what `staging` and the streamed pages hold."""
        try:
            program = (self.files.identity(pid, command, identity.inherited_environment(),
                                           self.settings).to_json()
                       if self.files else None)
            info = WorkloadInfo(
                name=self.repo.prefix,
                created_at=timestamp(),
                command=([REDACTED] if self.settings.redact_command
                         else recorded_command(command)),
                root_pid=pid,
                stdio=stdio,
                additional_paths=list(self.settings.additional_paths),
                criu_version=self.criu_version,
                kernel=platform.release(),
                hostname=socket.gethostname(),
                dump_seconds=dumped.seconds,
                program=program,
            )
            deadline.check("the dump")
        except BaseException as e:
            _stop_uploads(dumped.uploads, e)
            raise
        return self.repo.commit(staging, ckpt_id, info, deadline, dumped.pages)

    def _refuse_what_a_new_container_lacks(self, pid: int) -> None:
        """CriuError, before the dump, for what a fresh container of the same image could not
        give the restored tree."""
        if self.files and self.files.problem:
            raise CriuError(self.files.problem)
        outside = procs.outside_tree(pid)
        if outside:
            shown = [{"pid": p, "command": procs.command_line(p)[:200]} for p in outside[:10]]
            if self.settings.outside_tree == "refuse":
                raise CriuError(f"processes of the container are outside the workload's tree "
                                f"and would be lost: {shown}; set --outside-tree warn to "
                                "checkpoint the tree without them")
            _log.warning("checkpoint.outside_tree", processes=shown,
                         detail="not in the checkpoint: a restore brings back the workload's tree "
                                "only; --outside-tree refuse makes this a refusal")
        needed, limit = procs.open_files_needed(pid), procs.open_file_limit()
        if limit is not None and needed > limit - options.RESTORE_FD_RESERVE:
            raise CriuError(f"restoring this tree needs about {needed} open files in one "
                            f"process (its descriptors and shared memory mappings), and the "
                            f"open-file limit (RLIMIT_NOFILE) here is {limit}, less "
                            f"{options.RESTORE_FD_RESERVE} that CRIU keeps for itself: a "
                            "container like this one could not restore it. Raise the "
                            "container's nofile limit, or use fewer shared mappings")

    def _dump(self, ckpt_id: str, pid: int, staging: Path, leave_running: bool,
              deadline: Deadline) -> "_Dumped":
        """CRIU dumps the tree; its pages stream to the store as they come, never to disk."""
        images = staging / IMAGES
        images.mkdir()
        watch = log.Stopwatch()
        failed: list[BaseException] = []
        uploads = TaskGroup("upload", UPLOADS_AT_ONCE)
        pages: list[Upload] = []

        def open_pages(name: str) -> Upload:
            # With UPLOADS_AT_ONCE under way, CRIU waits here for one to end.
            upload = self.repo.open_upload(ckpt_id, f"{IMAGES}/{name}", deadline, uploads,
                                           compress=self.settings.compression == "zstd")
            pages.append(upload)
            return upload

        def on_notify(stage: str, notified_pid: int) -> bool:
            # "post-dump" comes while the tree is still frozen: the one moment when the files it
            # uses are consistent with the memory just dumped. An error here must reach CRIU as
            # a refusal, so that it fails the dump cleanly and lets the tree run on.
            if stage == "post-dump":
                try:
                    if self.files:
                        self.files.capture(staging)
                    if self.settings.additional_paths:
                        extras.pack(self.settings.additional_paths, staging / extras.ARCHIVE)
                except Exception as e:  # noqa: BLE001  (re-raised once CRIU has let go)
                    failed.append(e)
                    return False
            return session.log_event(stage, notified_pid)

        receiver = PageReceiver(images, open_pages).start()
        fd = os.open(images, os.O_DIRECTORY)
        frozen = False
        try:
            req = options.dump(pid, fd, leave_running=leave_running,
                               page_server_fd=receiver.theirs.fileno(),
                               ghost_limit=self.settings.ghost_limit_mib * 1024 * 1024)
            session.call(req, criu_binary=self.settings.criu_binary, on_notify=on_notify,
                         log_path=images / req.opts.log_file, deadline=deadline,
                         pass_fds=[receiver.theirs.fileno()])
            frozen = not leave_running  # CRIU switches them back itself for a tree it lets run
            receiver.finish(timeout=max(1.0, deadline.remaining()))
        except BaseException as e:
            if frozen:  # CRIU's dump stood: the tree is frozen, its connections in repair mode
                repair.leave_repair_mode(pid)
            receiver.theirs.close()
            _stop_uploads(uploads, e)
            if failed and isinstance(e, CriuError):
                if isinstance(failed[0], CrikpyError):
                    raise failed[0]
                raise CriuError(f"copying the container's files or additional paths failed: "
                                f"{type(failed[0]).__name__}: {failed[0]}") from failed[0]
            if receiver.error is not None and isinstance(e, CriuError):
                raise CriuError(f"{e} (the page stream failed first: "
                                f"{type(receiver.error).__name__}: {receiver.error})") from e
            raise
        finally:
            os.close(fd)
        return _Dumped(watch.elapsed(), uploads, pages, receiver.bytes)

    def restore(self, manifest: Manifest, before_criu: Callable[[], None] = lambda: None) -> int:
        """Fetch, verify and restore `manifest`'s checkpoint; returns the restored root's PID.
        `before_criu` runs once the checkpoint is verified and in place, just before CRIU.

        Raises NodeFault when this node cannot restore it, CorruptCheckpoint when it does not
        verify, CriuError when CRIU fails for a reason it does not name, StoreError, or
        Interrupted when a SIGTERM comes during the download. Nothing is left running then, and
        additional paths are as they were.
        """
        blocker = preflight.restore_blocker()
        if blocker:
            raise NodeFault(blocker)
        staging = self._fresh_dir(f"restore-{manifest.id}")
        put_back = files_back = None
        try:
            self.repo.fetch(manifest, staging, Deadline.never(on_sigterm=ABORT))
            if self.files:
                files_back = self.files.put_back(staging, authenticated=self.repo.keys is not None)
            wanted = [p for p in manifest.additional_paths if p in self.settings.additional_paths]
            if (staging / extras.ARCHIVE).exists() and wanted:
                put_back = extras.put_back(staging / extras.ARCHIVE, wanted,
                                           authenticated=self.repo.keys is not None)
            before_criu()
            watch = log.Stopwatch()
            pid = self._restore_images(staging / IMAGES, manifest.stdio)
            for done in (files_back, put_back):
                if done:
                    done.keep()
            _log.info("restore.done", id=manifest.id, pid=pid, seconds=watch.elapsed(),
                      peak_rss_mib=log.peak_rss_mib())
            return pid
        except BaseException as e:
            procs.reap_dead_children()  # a failed restore's root, whose PID the next one needs
            for done in (put_back, files_back):
                if done:
                    done.undo()
            if isinstance(e, CrikpyError):
                criu_log = _read_or_none(staging / IMAGES / "restore.log")
                e.criu_log = criu_log
                if isinstance(e, CriuError) and not isinstance(e, NodeFault) and criu_log:
                    node_fault = preflight.node_fault_in(criu_log.decode(errors="replace"))
                    if node_fault:
                        raise NodeFault(f"this node cannot restore checkpoint {manifest.id}: "
                                        f"{node_fault}") from e
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

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
                                on_notify=session.log_event, log_path=images / req.opts.log_file,
                                deadline=Deadline.after(budget.CRIU_RESTORE_SECONDS))
        finally:
            for h in held:
                os.close(h)
        return resp.restore.pid


@dataclasses.dataclass(frozen=True)
class _Dumped:
    seconds: float
    uploads: TaskGroup  # the pages' uploads, still under way
    pages: list[Upload]
    pages_bytes: int


def _stop_uploads(uploads: TaskGroup, error: BaseException) -> None:
    """Make every streamed upload stop and clean up, before the caller goes on (bounded)."""
    uploads.cancel(error)
    uploads.join(CLEANUP_WAIT_SECONDS)


def _tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
