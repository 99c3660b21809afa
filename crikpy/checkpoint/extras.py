"""Additional paths: files outside the image that a checkpoint carries, packed and put back.

At the dump, while the tree is frozen, the configured paths go into one tar archive (PAX, so
directories, empty ones too, symlinks as links, modes, numeric owners and mtimes survive).
What a tar cannot hold faithfully (sockets, FIFOs, devices) is left out with a warning; crikpy
refuses such a path at start (`check_savable`) when it is there already.

At a restore, the archive is never trusted for where to write: only members under a path this
pod's own settings name are put back, and each member name must be a plain relative path. What
was at each path before is moved aside first, so a restore that fails can `undo()` and a cold
start never runs on a checkpoint's stale files; `keep()` drops the old copies once CRIU succeeded.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from crikpy.paths import remove
from crikpy import log
from crikpy.errors import ConfigError, CorruptCheckpoint, NodeFault
from crikpy.files import kind
from crikpy.paths import normal_path

ARCHIVE = "extra.tar"  # the file holding additional paths, inside a checkpoint
_ASIDE = ".crikpy-aside-"
_SAVABLE = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)

_log = log.get()


def under(path: str, root: str) -> bool:
    """`path` is `root` or lies inside it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def outermost(paths: Iterable[str]) -> list[str]:
    """Normalised absolute paths with those inside another listed path dropped."""
    kept: list[str] = []
    for p in sorted({normal_path(p) for p in paths}):
        if not any(under(p, k) for k in kept):
            kept.append(p)
    return kept


def _walk(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry at and under `path`, parents first, symlinks not followed."""
    st = os.lstat(path)
    yield path, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(path)):
            yield from _walk(os.path.join(path, name))


def check_savable(paths: Iterable[str]) -> None:
    """ConfigError for a configured path that is, or holds, a socket, FIFO or device; a
    warning for one that is a symlink, since only the link is saved, not what it points to."""
    for path in outermost(paths):
        if not os.path.lexists(path):
            continue
        if os.path.islink(path):
            _log.warning("additional_path.is_symlink", path=path, target=os.readlink(path),
                         detail="only the link is saved; list its target in additionalPaths "
                                "to save the data")
        for entry, st in _walk(path):
            if not any(is_kind(st.st_mode) for is_kind in _SAVABLE):
                raise ConfigError(
                    f"additional path {entry} is a {kind(st.st_mode)}, which a checkpoint cannot "
                    "carry; list only files, directories and symlinks in additionalPaths")


def pack(paths: Iterable[str], archive: Path) -> list[str]:
    """Write the paths into `archive`; returns the entries left out (sockets, FIFOs, devices)."""
    skipped: list[str] = []
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in outermost(paths):
            if not os.path.lexists(path):
                _log.info("additional_path.absent", path=path)
                continue
            for entry, st in _walk(path):
                if any(is_kind(st.st_mode) for is_kind in _SAVABLE):
                    tar.add(entry, arcname=entry.lstrip("/"), recursive=False)
                else:
                    skipped.append(entry)
                    _log.warning("additional_path.skipped", path=entry, kind=kind(st.st_mode))
    return skipped


@dataclasses.dataclass
class _Aside:
    path: str
    moved_to: str | None  # where the old entry went; None: there was nothing
    inside: bool = False  # a mount point: its children went into a directory inside it


class PutBack:
    """Paths put back from a checkpoint; `keep()` or `undo()` once the restore's fate is known."""

    def __init__(self, asides: list[_Aside]) -> None:
        self._asides = asides

    def keep(self) -> None:
        for a in self._asides:
            if a.moved_to:
                remove(a.moved_to)

    def undo(self) -> None:
        for a in self._asides:
            if a.inside:
                for name in os.listdir(a.path):
                    if os.path.join(a.path, name) != a.moved_to:
                        remove(os.path.join(a.path, name))
                for name in os.listdir(a.moved_to):
                    os.rename(os.path.join(a.moved_to, name), os.path.join(a.path, name))
                os.rmdir(a.moved_to)
                continue
            if os.path.lexists(a.path):
                remove(a.path)
            if a.moved_to:
                os.rename(a.moved_to, a.path)


def put_back(archive: Path, configured: Iterable[str], *, authenticated: bool) -> PutBack:
    """Put back the members of `archive` that lie under `configured` paths, old files set aside.

    An archive that is not `authenticated` (no key is set) may come from anyone who can write
    the store, so its set-user-id and set-group-id bits are dropped. Raises CorruptCheckpoint
    for a member that is not a plain relative path, or that would be written through a symlink
    the archive itself holds.
    """
    roots = outermost(configured)
    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise CorruptCheckpoint(f"the additional paths archive cannot be read: {e}") from e
    with tar:
        try:
            members = _confined(tar.getmembers(), roots)
        except (tarfile.TarError, EOFError) as e:
            raise CorruptCheckpoint(f"the additional paths archive cannot be read: {e}") from e
        if not authenticated:
            _drop_set_id_bits(members)
        present = {root for root in roots if any(under("/" + m.name, root) for m in members)}
        asides: list[_Aside] = []
        put = PutBack(asides)
        try:
            for root in sorted(present):
                asides.append(_set_aside(root))
            tar.extractall("/", members=members, numeric_owner=True, filter="fully_trusted")
        except BaseException as e:
            put.undo()
            if isinstance(e, (OSError, tarfile.TarError, EOFError)):
                raise NodeFault(f"cannot put back additional paths: {e}; check the space and "
                                "permissions where they go") from e
            raise
    _log.info("additional_paths.restored", paths=sorted(present), entries=len(members))
    return put


def _drop_set_id_bits(members: list[tarfile.TarInfo]) -> None:
    dropped = [m for m in members if m.mode & (stat.S_ISUID | stat.S_ISGID)]
    for m in dropped:
        m.mode &= ~(stat.S_ISUID | stat.S_ISGID)
    if dropped:
        _log.warning("additional_path.set_id_dropped", paths=["/" + m.name for m in dropped],
                     reason="the checkpoint is not sealed, so anyone who can write the store "
                            "could have set them; set --encryption-key-file to keep them")


def _confined(members: list[tarfile.TarInfo], roots: list[str]) -> list[tarfile.TarInfo]:
    kept: list[tarfile.TarInfo] = []
    names: set[str] = set()
    links: set[str] = set()  # symlink members: nothing may be written through them
    files: set[str] = set()  # regular files kept: the only targets a hard link may have
    leaves: set[str] = set()  # names that are not directories: nothing may lie under them
    parents: set[str] = set()  # names that something lies under: they must be directories
    for m in members:
        name = PurePosixPath(m.name)
        if ("\x00" in m.name or m.name != name.as_posix() or name.is_absolute()
                or ".." in name.parts or not name.parts or len(m.name) > 4000
                or any(len(p) > 255 for p in name.parts)):
            raise CorruptCheckpoint(f"the additional paths archive holds a bad name {m.name!r}")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise CorruptCheckpoint(f"the additional paths archive holds {m.name!r}, which is "
                                    "neither a file, a directory nor a link")
        if m.name in names:  # a second member of one name would be written through the first
            raise CorruptCheckpoint(f"the additional paths archive holds {m.name!r} twice")
        names.add(m.name)
        if any(str(parent) in links for parent in name.parents):
            raise CorruptCheckpoint(f"the additional paths archive writes {m.name!r} through "
                                    "one of its own symlinks")
        if any(str(parent) in leaves for parent in name.parents) or (
                not m.isdir() and m.name in parents):
            raise CorruptCheckpoint(f"the additional paths archive holds {m.name!r} both as a "
                                    "file and as a directory")
        absolute = "/" + m.name
        if not any(under(absolute, r) for r in roots):
            _log.warning("additional_path.ignored", path=absolute,
                         reason="not under a path this pod's settings name")
            continue
        if m.islnk() and m.linkname not in files:
            _log.warning("additional_path.ignored", path=absolute,
                         reason=f"a hard link to {m.linkname!r}, which is not put back")
            continue
        if m.issym():
            links.add(m.name)
        elif m.isreg():
            files.add(m.name)
        if not m.isdir():
            leaves.add(m.name)
        parents.update(str(p) for p in name.parents)
        kept.append(m)
    return kept


def _set_aside(path: str) -> _Aside:
    if not os.path.lexists(path):
        return _Aside(path, None)
    target = Path(path)
    aside = str(target.with_name(f".{target.name}{_ASIDE}{secrets.token_hex(4)}"))
    try:
        os.rename(path, aside)
        return _Aside(path, aside)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EXDEV):
            raise
    # A mount point (a volume) cannot move: move its children into a directory inside it.
    inside = os.path.join(path, f"{_ASIDE}{secrets.token_hex(4)}")
    os.mkdir(inside, 0o700)
    for name in os.listdir(path):
        if os.path.join(path, name) != inside:
            os.rename(os.path.join(path, name), os.path.join(inside, name))
    return _Aside(path, inside, inside=True)
