"""The workload's changes to the container's files: captured at the dump, put back at a restore.

Captured while the tree is frozen (CRIU's post-dump), so files and memory are of one instant:
- on the root filesystem, what differs from the baseline taken when the container started
  (created, modified, renamed, chmodded entries go into the archive; deleted ones into a list);
- mounts carried whole (/dev/shm, emptyDir volumes): everything in them.
Sockets are left to CRIU (it binds them again); devices are left out with a warning.

Put back before CRIU runs, into a new container of the same image. What was at each path is
moved aside first, so a restore that fails can `undo()` and the next attempt (the previous
checkpoint, or a cold start) finds the image's files; `keep()` drops the old copies once CRIU
succeeded. The archive is never trusted for where to write: member names must be plain relative
paths on a mount this container carries, and set-id bits are dropped unless the checkpoint is
sealed.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import secrets
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from crikpy.paths import remove
from crikpy import log
from crikpy.container.mounts import Carry, Mount
from crikpy.container.snapshot import Snapshot, take
from crikpy.errors import CorruptCheckpoint, CriuError, NodeFault
from crikpy.files import kind

ARCHIVE = "container-files.tar"  # inside a checkpoint, beside CRIU's images
LISTING = "container-files.json"  # {"deleted": [paths], "whole": [mount points]}
_ASIDE = ".crikpy-aside-"

_log = log.get()


@dataclasses.dataclass(frozen=True)
class Scope:
    """What this container carries: the root's changes and whole mounts; the rest is left
    alone (mounts that follow the pod, crikpy's own dirs, additional paths)."""

    whole: tuple[str, ...]  # mount points carried whole
    left_alone: frozenset[str]
    limit: int  # entries a listing may hold

    @classmethod
    def of(cls, mounts: list[Mount], own: list[str], limit: int) -> "Scope":
        whole = tuple(sorted(m.point for m in mounts if m.carry is Carry.WHOLE))
        alone = {m.point for m in mounts if m.carry is Carry.NONE}
        return cls(whole, frozenset(alone | {os.path.normpath(p) for p in own}), limit)

    def listing(self) -> Snapshot:
        """The root filesystem now: at start, the baseline; at a dump, what to compare with it."""
        return take(["/"], self.left_alone | set(self.whole), self.limit)

    def carries(self, path: str) -> bool:
        """`path` lies on the root filesystem or in a mount carried whole, not in what is left
        alone: the deepest of those that holds it decides."""
        def deepest(points) -> int:
            return max((len(p) for p in points if path == p or path.startswith(p.rstrip("/") + "/")),
                       default=-1)
        whole = max((len(w) for w in self.whole if path.startswith(w + "/")), default=-1)
        return deepest(self.left_alone) < max(whole, 0)


@dataclasses.dataclass(frozen=True)
class Captured:
    entries: int
    bytes: int
    deleted: int


def capture(scope: Scope, baseline: Snapshot, into: Path, max_bytes: int) -> Captured:
    """Write the archive and the listing into the dir `into`. Raises CriuError (refusing the
    checkpoint) when the changed files hold more than `max_bytes`."""
    now = scope.listing()
    whole = take(scope.whole, scope.left_alone, scope.limit)
    changed = [p for p, e in now.entries.items() if baseline.entries.get(p) != e
               and not (stat.S_ISDIR(e[0]) and _same_dir(baseline.entries.get(p), e))]
    deleted = _topmost([p for p, e in baseline.entries.items()
                        if p not in now.entries or _kind_changed(e, now.entries[p])])
    members = sorted(changed) + sorted(whole.entries)
    entries = {**now.entries, **whole.entries}
    size = sum(entries[p][3] for p in members if stat.S_ISREG(entries[p][0]))
    if size > max_bytes:
        biggest = max((p for p in members if stat.S_ISREG(entries[p][0])),
                      key=lambda p: entries[p][3])
        raise CriuError(f"the workload changed {size} bytes of the container's files (the "
                        f"largest: {biggest}, {entries[biggest][3]} bytes), more than the "
                        f"{max_bytes} a checkpoint carries; keep bulk data on a volume, or raise "
                        "--max-changed-mib")
    written = 0
    with tarfile.open(into / ARCHIVE, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in members:
            mode = entries[path][0]
            if stat.S_ISSOCK(mode):
                continue  # CRIU binds a listening socket's file again itself
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                _log.warning("files.skipped", path=path, kind=kind(mode),
                             detail="a device made at run time is not carried")
                continue
            try:
                tar.add(path, arcname=path.lstrip("/"), recursive=False)
            except FileNotFoundError:
                continue  # a file of crikpy's own helpers that came and went
            written += 1
    (into / LISTING).write_text(json.dumps({"deleted": deleted, "whole": list(scope.whole)}))
    return Captured(written, size, len(deleted))


def _same_dir(before, after) -> bool:
    """A directory whose type, mode and owner stayed: only its children changed."""
    return before is not None and before[:3] == after[:3]


def _kind_changed(before, after) -> bool:
    return stat.S_IFMT(before[0]) != stat.S_IFMT(after[0])


def _topmost(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for p in sorted(paths):
        if not kept or not p.startswith(kept[-1].rstrip("/") + "/"):
            kept.append(p)
    return kept


@dataclasses.dataclass
class _Moved:
    path: str
    aside: str | None  # where the old entry went; None: there was nothing
    dir_meta: tuple[int, int, int] | None = None  # a directory kept in place: its mode, owner


class PutBack:
    """Files put back from a checkpoint; `keep()` or `undo()` once the restore's fate is known."""

    def __init__(self) -> None:
        self.moved: list[_Moved] = []
        self.asides: list[str] = []

    def keep(self) -> None:
        for aside in self.asides:
            shutil.rmtree(aside, ignore_errors=True)

    def undo(self) -> None:
        for m in reversed(self.moved):
            try:
                if m.dir_meta is not None:
                    os.chmod(m.path, m.dir_meta[0])
                    os.lchown(m.path, m.dir_meta[1], m.dir_meta[2])
                    continue
                remove(m.path)
                if m.aside:
                    os.rename(m.aside, m.path)
            except OSError as e:
                _log.warning("files.undo_failed", path=m.path, error=e.strerror)
        self.keep()


def put_back(staging: Path, scope: Scope, *, authenticated: bool) -> PutBack | None:
    """Put back what `staging` holds (None when the checkpoint carries no container files)."""
    if not (staging / LISTING).exists():
        return None
    watch = log.Stopwatch()
    try:
        listing = json.loads((staging / LISTING).read_text())
        deleted = [str(p) for p in listing["deleted"]]
        whole = [str(p) for p in listing["whole"]]
        tar = tarfile.open(staging / ARCHIVE)
        members = tar.getmembers()
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError, EOFError) as e:
        raise CorruptCheckpoint(f"the container files of the checkpoint cannot be read: {e}") from e
    put = PutBack()
    with tar:
        members = _confined(members, deleted, scope)
        if not authenticated:
            for m in members:
                m.mode &= ~(stat.S_ISUID | stat.S_ISGID)
        try:
            for point in whole:
                if point in scope.whole and os.path.isdir(point):
                    for name in sorted(os.listdir(point)):
                        if not name.startswith(_ASIDE):
                            _set_aside(put, os.path.join(point, name), point)
            for path in deleted:
                if os.path.lexists(path):
                    _set_aside(put, path, _mount_of(path, scope))
            for m in members:
                path = "/" + m.name
                if m.isdir() and os.path.isdir(path) and not os.path.islink(path):
                    st = os.lstat(path)
                    put.moved.append(_Moved(path, None, (st.st_mode, st.st_uid, st.st_gid)))
                    continue
                if os.path.lexists(path):
                    _set_aside(put, path, _mount_of(path, scope))
                else:
                    put.moved.append(_Moved(path, None))
            tar.extractall("/", members=members, numeric_owner=True, filter="fully_trusted")
        except BaseException as e:
            put.undo()
            if isinstance(e, (OSError, tarfile.TarError, EOFError)):
                raise NodeFault(f"cannot put back the container's files: {e}; check the space "
                                "where they go") from e
            raise
    _log.info("files.restored", entries=len(members), deleted=len(deleted), whole=whole,
              seconds=watch.elapsed())
    return put


def _confined(members: list[tarfile.TarInfo], deleted: list[str],
              scope: Scope) -> list[tarfile.TarInfo]:
    names: set[str] = set()
    for m in members:
        name = PurePosixPath(m.name)
        if ("\x00" in m.name or m.name != name.as_posix() or name.is_absolute()
                or ".." in name.parts or not name.parts or m.name in names):
            raise CorruptCheckpoint(f"the container files hold a bad name {m.name!r}")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise CorruptCheckpoint(f"the container files hold {m.name!r}, which is not a file, "
                                    "directory, link or FIFO")
        if m.islnk() and m.linkname not in names:
            raise CorruptCheckpoint(f"the container files link {m.name!r} to what they lack")
        names.add(m.name)
    for path in ["/" + m.name for m in members] + deleted:
        if not path.startswith("/") or not scope.carries(path):
            raise CorruptCheckpoint(f"the container files write {path!r}, outside what this "
                                    "container carries")
    return members


def _mount_of(path: str, scope: Scope) -> str:
    return max((w for w in scope.whole if path.startswith(w + "/")), key=len, default="/")


def _set_aside(put: PutBack, path: str, mount: str) -> None:
    """Move `path` into an aside directory on its own mount (copied where it cannot move)."""
    aside_dir = next((a for a in put.asides if os.path.dirname(a) == mount.rstrip("/") or
                      (mount == "/" and os.path.dirname(a) == "/")), None)
    if aside_dir is None:
        aside_dir = os.path.join(mount, f"{_ASIDE}{secrets.token_hex(4)}")
        os.mkdir(aside_dir, 0o700)
        put.asides.append(aside_dir)
    aside = os.path.join(aside_dir, str(len(put.moved)))
    try:
        os.rename(path, aside)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EBUSY):
            raise
        # overlayfs moves a directory of the image only with redirect_dir: copy it instead
        shutil.copytree(path, aside, symlinks=True)
        remove(path)
    put.moved.append(_Moved(path, aside))
