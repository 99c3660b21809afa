"""A listing of a tree's entries and their metadata, taken without following symlinks or
crossing into mounts it is told to skip.

At start, crikpy lists the container's root filesystem before anything changes it: that
baseline is the image as this container got it. At a dump, a second listing compared with the
baseline says what the workload changed (crikpy.container.changes); the baseline's digest says
which image the checkpoint was taken in (crikpy.container.identity).

The baseline is kept on disk in the work dir, because the lean re-exec (crikpy.entrypoint)
drops everything in memory, and PID 1 should not hold a listing of the whole image while it
waits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Iterable

from crikpy.errors import CriuError

# [mode, uid, gid, size, mtime_ns, ctime_ns]: ctime moves whenever content or metadata change,
# and nothing but the kernel sets it, so an entry whose list is the same was not touched. A list,
# not a tuple, so that the baseline loads from JSON as it was taken, with nothing to convert.
Entry = list[int]


class TooManyFiles(CriuError):
    """The tree holds more entries than a checkpoint may list."""


@dataclasses.dataclass
class Snapshot:
    entries: dict[str, Entry]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, separators=(",", ":")))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        return cls(json.loads(path.read_text()))

    def group_digests(self) -> dict[str, str]:
        """A digest of the entries under each directory two levels down (`/usr/lib`, `/opt/app`),
        of what a build sets: type, mode, owner, size and mtime (not the mtime of a directory or
        a symlink, which the runtime sets when it makes mount points and /etc/mtab). Equal
        images give equal digests."""
        lines: dict[str, list[str]] = {}
        for path in sorted(self.entries):
            mode, uid, gid, size, mtime, _ = self.entries[path]
            if stat.S_ISDIR(mode):
                size = mtime = 0
            elif stat.S_ISLNK(mode):
                mtime = 0
            group = "/".join(path.split("/", 3)[:3]) or "/"
            lines.setdefault(group, []).append(f"{path}\0{mode} {uid} {gid} {size} {mtime}")
        return {group: hashlib.sha256("\n".join(found).encode(errors="surrogateescape"))
                .hexdigest()[:16] for group, found in lines.items()}


def entry(st: os.stat_result) -> Entry:
    return [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def take(roots: Iterable[str], skip: Iterable[str], limit: int) -> Snapshot:
    """Every entry under `roots` (not the roots themselves), except what lies at or under a
    path in `skip`. Raises TooManyFiles past `limit` entries."""
    skipped = set(skip)
    entries: dict[str, Entry] = {}
    stack = [r for r in roots if os.path.isdir(r)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                found = list(it)
        except OSError:
            continue  # gone, or unreadable: nothing of it can be carried either way
        for item in found:
            if item.path in skipped:
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            entries[item.path] = entry(st)
            if len(entries) > limit:
                raise TooManyFiles(
                    f"the container's files hold more than {limit} entries under "
                    f"{', '.join(roots)}, more than a checkpoint lists; raise "
                    "--max-container-files, or keep bulk data on a volume")
            if stat.S_ISDIR(st.st_mode):
                stack.append(item.path)
    return Snapshot(entries)
