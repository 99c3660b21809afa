"""The checkpoint manifest: what a checkpoint holds, written last so that it marks the commit.

The manifest lists every file with its size and sha256, the workload's command and stdio, and the
CRIU and kernel versions that made it. Parsing is strict (docs/format.md is the spec): a missing
or mistyped field, or one out of its limits, makes a corrupt checkpoint that is never restored;
unknown fields are ignored; a later format version is kept for a crikpy that can read it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import posixpath
import re
import secrets
from typing import Any

from crikpy.checkpoint import framed
from crikpy.container import identity
from crikpy.errors import CorruptCheckpoint, NewerCheckpoint
from crikpy.paths import additional_paths_fault
from crikpy.paths import MAX_LIST_JSON_BYTES as _MAX_LIST_JSON_BYTES
from crikpy.paths import plain_text as _plain_text

FORMAT = "crikpy.checkpoint/v1"
REDACTED = "<redacted>"  # the command, with --redact-command
CODECS = (framed.CODEC,)
# Limits on what a manifest may claim, so a hostile one cannot exhaust memory or disk.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FILES = 100_000
MAX_FILE_BYTES = 1 << 40
MAX_COMMAND_ARGS = 4096
_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}")
_FORMAT_RE = re.compile(r"crikpy\.checkpoint/v([0-9]{1,6})")


def new_id(now: datetime.datetime | None = None) -> str:
    """A checkpoint id that sorts by creation time: `20261122T142301.123Z-1a2b3c4d`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def is_id(text: str) -> bool:
    return bool(_ID_RE.fullmatch(text))


def timestamp() -> str:
    """Now, as the records and the pointer state it (UTC, ISO 8601, milliseconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def id_age_seconds(ckpt_id: str, now: datetime.datetime | None = None) -> float:
    """How long before `now` a checkpoint id was made, by its own timestamp (0 for a bad id)."""
    try:
        made = datetime.datetime.strptime(ckpt_id[:19], "%Y%m%dT%H%M%S.%f").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return 0.0
    return ((now or datetime.datetime.now(datetime.timezone.utc)) - made).total_seconds()


def recorded_command(command: list[str]) -> list[str]:
    """The command as a manifest records it: whole, or its first arguments and a note of how
    many more there were, so that a long command never makes a checkpoint its reader refuses."""
    if len(command) <= MAX_COMMAND_ARGS and len(json.dumps(command)) <= _MAX_LIST_JSON_BYTES:
        return list(command)
    kept: list[str] = []
    budget = _MAX_LIST_JSON_BYTES - 100  # room for the note
    for arg in command[:MAX_COMMAND_ARGS - 1]:
        budget -= len(json.dumps(arg)) + 2
        if budget < 0:
            break
        kept.append(arg)
    return [*kept, f"<{len(command) - len(kept)} more arguments not recorded>"]


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the checkpoint's files/, `/`-separated
    size: int  # size and sha256 of the stored bytes (compressed and sealed, if they are)
    sha256: str
    codec: str | None = None  # framed.CODEC when the stored bytes are compressed


@dataclasses.dataclass(frozen=True)
class WorkloadInfo:
    """What a checkpoint is of: the manifest's fields other than its id, files and sealing,
    as the migrator describes the tree it dumped."""

    name: str
    created_at: str
    command: list[str]
    root_pid: int
    stdio: dict[str, str]
    additional_paths: list[str]
    criu_version: str
    kernel: str
    hostname: str
    dump_seconds: float
    program: dict | None = None

    def fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


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
    # {"cipher", "key_id", "chunk_bytes"} when the checkpoint is sealed; never a key itself.
    encryption: dict | None = None
    # What the workload was built from (crikpy.container.identity); absent before it was kept.
    program: dict | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        raw = dataclasses.asdict(self)
        for entry in raw["files"]:
            if entry["codec"] is None:
                del entry["codec"]
        return json.dumps(raw, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> "Manifest":
        """Parse and check every field; CorruptCheckpoint for anything unexpected.

        Unknown fields are ignored (a later v1 may add optional ones); a later format version
        raises NewerCheckpoint, which is no fault of the checkpoint.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise CorruptCheckpoint(f"manifest {where} is {len(data)} bytes, over the "
                                    f"{MAX_MANIFEST_BYTES} a manifest may have")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CorruptCheckpoint(f"manifest {where} is not JSON; the checkpoint is corrupt")
        if not isinstance(raw, dict):
            raise CorruptCheckpoint(f"manifest {where} is not a JSON object")
        fmt = raw.get("format")
        version = _FORMAT_RE.fullmatch(fmt) if isinstance(fmt, str) else None
        if version and int(version.group(1)) > 1:
            raise NewerCheckpoint(
                f"checkpoint {where} has format {fmt!r}, written by a newer crikpy (this one "
                f"reads {FORMAT!r}); it is kept: run a crikpy that reads it")
        if fmt != FORMAT:
            raise CorruptCheckpoint(
                f"manifest {where} has format {fmt!r}, this crikpy reads {FORMAT!r}; "
                "it was written by another tool")
        required = {f.name for f in dataclasses.fields(cls)} - _OPTIONAL
        missing = required - set(raw)
        if missing:
            raise CorruptCheckpoint(f"manifest {where} lacks fields {sorted(missing)}")
        try:
            fields = {name: raw[name] for name in required | (_OPTIONAL & set(raw))}
            fields["files"] = _check_files(fields["files"])
            manifest = cls(**fields)
            _check_types(manifest)
        except (TypeError, ValueError) as e:
            raise CorruptCheckpoint(f"manifest {where} is malformed: {e}")
        return manifest


_OPTIONAL = {"encryption", "program"}


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_files(entries: Any) -> list[FileEntry]:
    if not isinstance(entries, list) or len(entries) > MAX_FILES:
        raise ValueError(f"'files' must be a list of at most {MAX_FILES} entries")
    files, seen = [], set()
    for entry in entries:
        if not isinstance(entry, dict) or not {"path", "size", "sha256"} <= set(entry):
            raise ValueError(f"bad file entry {str(entry)[:80]!r}")
        path = entry["path"]
        if (not _plain_text(path) or path.startswith("/") or len(path) > 1024
                or any(p in ("", ".", "..") or len(p) > 255 for p in path.split("/"))):
            raise ValueError(f"unsafe file path {str(path)[:80]!r}")
        if not _plain_int(entry["size"]) or not 0 <= entry["size"] <= MAX_FILE_BYTES:
            raise ValueError(f"bad size for {path!r}")
        sha256 = entry["sha256"]
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"bad sha256 for {path!r}")
        if path in seen:
            raise ValueError(f"file {path!r} is listed twice")
        seen.add(path)
        codec = entry.get("codec")
        if codec is not None and codec not in CODECS:
            raise NewerCheckpoint(f"file {path!r} is stored with codec {str(codec)[:40]!r}, which "
                                  "this crikpy does not know; a newer crikpy wrote it")
        files.append(FileEntry(path, entry["size"], entry["sha256"], codec))
    for path in seen:  # "a" and "a/b" cannot both be files
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise ValueError(f"{'/'.join(parts[:i])!r} is both a file and a directory")
    return files


def _check_types(m: Manifest) -> None:
    if not is_id(m.id):
        raise ValueError(f"bad id {str(m.id)[:80]!r}")
    for field, kind in (("name", str), ("created_at", str), ("criu_version", str),
                        ("kernel", str), ("hostname", str)):
        value = getattr(m, field)
        if not isinstance(value, kind) or len(value) > 1024:
            raise ValueError(f"field {field!r} must be a string of at most 1024 characters")
    if not _plain_int(m.root_pid) or not 1 <= m.root_pid <= 4_194_304:
        raise ValueError("field 'root_pid' must be a PID")
    if isinstance(m.dump_seconds, bool) or not isinstance(m.dump_seconds, (int, float)):
        raise ValueError("field 'dump_seconds' must be a number")
    if (not isinstance(m.command, list) or not 1 <= len(m.command) <= MAX_COMMAND_ARGS
            or not all(isinstance(a, str) for a in m.command)):
        raise ValueError("field 'command' must be a non-empty list of strings")
    if (not isinstance(m.stdio, dict)
            or not all(k in ("0", "1", "2") and isinstance(v, str) and len(v) <= 4096
                       for k, v in m.stdio.items())):
        raise ValueError("field 'stdio' must map '0', '1', '2' to strings")
    if m.encryption is not None and not (
            isinstance(m.encryption, dict)
            and isinstance(m.encryption.get("cipher"), str)
            and isinstance(m.encryption.get("key_id"), str)
            and re.fullmatch(r"[0-9a-f]{16}", m.encryption["key_id"])
            and _plain_int(m.encryption.get("chunk_bytes"))):
        raise ValueError("field 'encryption' must hold cipher, key_id and chunk_bytes")
    if m.program is not None:
        identity.parse(m.program)
    if (not isinstance(m.additional_paths, list)
            or not all(isinstance(p, str) and p.startswith("/") and p == posixpath.normpath(p)
                       for p in m.additional_paths)
            or additional_paths_fault(m.additional_paths)):
        raise ValueError("field 'additional_paths' must be a list of normalised absolute paths")
