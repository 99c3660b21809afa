"""The checkpoint manifest: what a checkpoint holds, written last so that it marks the commit.

The manifest lists every file with its size and sha256, the workload's command and stdio, and the
CRIU and kernel versions that made it. Parsing is strict: a manifest of another format version, or
with a missing or mistyped field, is a foreign or corrupt checkpoint and is never restored.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import secrets
from typing import Any

from crikpy.errors import CorruptCheckpoint

FORMAT = "crikpy.checkpoint/v1"
_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$")


def new_id(now: datetime.datetime | None = None) -> str:
    """A checkpoint id that sorts by creation time: `20261122T142301.123Z-1a2b3c4d`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def is_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the checkpoint's root, `/`-separated
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    id: str
    name: str
    created_at: str
    command: list[str]
    root_pid: int
    stdio: dict[str, str]  # fd number -> what /proc/PID/fd/N pointed to at dump time
    additional_paths: list[str]
    criu_version: str
    kernel: str
    hostname: str
    dump_seconds: float
    files: list[FileEntry]
    format: str = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> "Manifest":
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CorruptCheckpoint(f"manifest {where} is not JSON; the checkpoint is corrupt")
        if not isinstance(raw, dict):
            raise CorruptCheckpoint(f"manifest {where} is not a JSON object")
        if raw.get("format") != FORMAT:
            raise CorruptCheckpoint(
                f"manifest {where} has format {raw.get('format')!r}, this crikpy reads {FORMAT!r}; "
                "it was written by another tool or version"
            )
        expected = {f.name: f.type for f in dataclasses.fields(cls)}
        if set(raw) != set(expected):
            missing, extra = set(expected) - set(raw), set(raw) - set(expected)
            raise CorruptCheckpoint(
                f"manifest {where} has missing fields {sorted(missing)} / unknown fields {sorted(extra)}"
            )
        try:
            files = [FileEntry(**_check_file(f)) for f in raw.pop("files")]
            manifest = cls(files=files, **raw)
            _check_types(manifest)
        except (TypeError, ValueError) as e:
            raise CorruptCheckpoint(f"manifest {where} is malformed: {e}")
        return manifest


def _check_file(entry: Any) -> dict:
    if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
        raise ValueError(f"bad file entry {entry!r}")
    path = entry["path"]
    if (not isinstance(path, str) or path.startswith("/")
            or any(p in ("", ".", "..") for p in path.split("/"))):
        raise ValueError(f"unsafe file path {path!r}")
    if not isinstance(entry["size"], int) or entry["size"] < 0:
        raise ValueError(f"bad size for {path!r}")
    if not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        raise ValueError(f"bad sha256 for {path!r}")
    return entry


def _check_types(m: Manifest) -> None:
    if not is_id(m.id):
        raise ValueError(f"bad id {m.id!r}")
    for field, kind in (("name", str), ("created_at", str), ("criu_version", str),
                        ("kernel", str), ("hostname", str), ("root_pid", int),
                        ("dump_seconds", (int, float)), ("command", list), ("stdio", dict),
                        ("additional_paths", list)):
        if not isinstance(getattr(m, field), kind):
            raise ValueError(f"field {field!r} has the wrong type")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m.stdio.items()):
        raise ValueError("field 'stdio' must map strings to strings")
