"""What the workload was built from, so that a new version starts as the new version.

A checkpoint records its program's identity; a start compares it with its own before it
restores, and a difference means a rollout (a new image, script, library or setting), not a
move: the start is cold and the checkpoint is kept aside. The identity:
- the image: a digest of the container's files as it started, per directory two levels down,
  so a difference names where (`/opt/app`), and the same image always gives the same digests;
- the files the workload's processes map (executables and libraries): path, size and mtime;
- the command (as a hash: it may hold a secret, see --redact-command);
- the environment crikpy did not set, less what differs between pods of one version: the pod's
  name, UID and IPs, the host name, the service links Kubernetes adds (they change with the
  namespace's Services), and names given in --version-ignore-env. Values are kept as hashes;
- the pod's revision (the controller-revision-hash or pod-template-hash label, which the
  kustomize component passes in), where the pod says it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Iterable

from crikpy import procs

# Values that differ between pods of one version, or between containers of one pod.
PER_POD_ENV = frozenset({"HOSTNAME", "HOME", "PWD", "SHLVL", "OLDPWD", "_", "POD_NAME", "POD_UID",
                         "POD_IP", "POD_IPS", "HOST_IP", "HOST_IPS", "NODE_NAME",
                         "KUBERNETES_NODE_NAME", "POD_NAMESPACE"})
# Kubernetes' service links: FOO_SERVICE_HOST, FOO_SERVICE_PORT[_NAME], FOO_PORT=tcp://...,
# FOO_PORT_80_TCP[_PROTO|_PORT|_ADDR].
_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|"
                           r"PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)")
_SERVICE_URL = re.compile(r"(tcp|udp|sctp)://")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest()[:16]


def inherited_environment() -> dict[str, str]:
    """crikpy's environment less its own CRIKPY_* settings: what the workload inherits, and so
    what every checkpoint of its memory holds."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}


def environment(env: dict[str, str], ignored: Iterable[str] = ()) -> dict[str, str]:
    """Each variable's hash, less those that differ per pod."""
    skip = PER_POD_ENV | set(ignored)
    return {k: _short_hash(v) for k, v in sorted(env.items())
            if k not in skip and not _SERVICE_LINK.fullmatch(k)
            and not (k.endswith("_PORT") and _SERVICE_URL.match(v))}


def command(argv: list[str]) -> str:
    """The command's hash; empty for none (a start that only restores)."""
    return _short_hash("\0".join(argv)) if argv else ""


def mapped_files(root: int) -> dict[str, list[int]]:
    """The regular files the tree's processes map (the executable and its libraries): path ->
    [size, mtime_ns]. Run-time files (/dev/shm, deleted ones) are the workload's state, not
    its program, and are left out."""
    found: dict[str, list[int]] = {}
    for pid in procs.tree(root):
        try:
            with open(f"/proc/{pid}/maps") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/") or "x" not in fields[1]:
                continue
            path = fields[5]
            if path in found or path.endswith(" (deleted)") or path.startswith("/dev/"):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            found[path] = [st.st_size, st.st_mtime_ns]
    return found


@dataclasses.dataclass(frozen=True)
class Identity:
    image: dict[str, str]
    mapped: dict[str, list[int]]
    command: str
    environment: dict[str, str]
    revision: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def changes_from(self, old: "Identity") -> list[str]:
        """What differs in `self` (this start) from `old` (the checkpoint's), each as a phrase
        naming it; empty when the checkpoint's program is this one."""
        changed: list[str] = []
        if old.revision and self.revision and old.revision != self.revision:
            changed.append(f"pod revision {old.revision} -> {self.revision}")
        for path, (size, mtime) in sorted(old.mapped.items()):
            try:
                st = os.stat(path)
                now = [st.st_size, st.st_mtime_ns]
            except OSError:
                now = None
            if now != [size, mtime]:
                changed.append(f"{path} ({'gone' if now is None else f'size {size} -> {now[0]}'})")
        groups = sorted(g for g in old.image.keys() | self.image.keys()
                        if old.image.get(g) != self.image.get(g))
        if groups:
            changed.append("image files under " + ", ".join(groups[:10])
                           + (f" and {len(groups) - 10} more" if len(groups) > 10 else ""))
        if old.command and self.command and old.command != self.command:
            changed.append("command")
        names = sorted(k for k in old.environment.keys() | self.environment.keys()
                       if old.environment.get(k) != self.environment.get(k))
        if names:
            changed.append("environment: " + ", ".join(names[:10]))
        return changed


def parse(raw: Any) -> Identity | None:
    """A manifest's record, checked for shape; None when it has none (an older crikpy's)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("program must be an object")
    image, mapped, env = raw.get("image"), raw.get("mapped"), raw.get("environment")
    command, revision = raw.get("command"), raw.get("revision")
    if not (isinstance(image, dict) and all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in image.items())):
        raise ValueError("program.image must map directories to digests")
    if not (isinstance(mapped, dict) and all(
            isinstance(k, str) and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            for k, v in mapped.items())):
        raise ValueError("program.mapped must map paths to [size, mtime_ns]")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in env.items())):
        raise ValueError("program.environment must map names to hashes")
    if not isinstance(command, str):
        raise ValueError("program.command must be a hash")
    if revision is not None and not isinstance(revision, str):
        raise ValueError("program.revision must be a string")
    return Identity(image, mapped, command, env, revision)
