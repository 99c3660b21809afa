"""Which of the container's mounts a checkpoint carries, read from /proc/self/mountinfo.

- the container's own root filesystem: its changes since the container started (`Carry.CHANGES`);
- mounts that start empty in every new pod and do not follow it to another node: the
  container's `/dev/shm` and Kubernetes `emptyDir` volumes, carried whole (`Carry.WHOLE`);
- everything else is left alone (`Carry.NONE`): volumes that follow the pod (PVCs, network
  filesystems), ConfigMaps, Secrets, projected tokens, the runtime's /etc/hosts and friends,
  /proc, /sys and /dev. A new pod has its own copy of each, or the same one.
"""

from __future__ import annotations

import dataclasses
import enum

MOUNTINFO = "/proc/self/mountinfo"
SHM = "/dev/shm"
EMPTY_DIR = "kubernetes.io~empty-dir"  # in the kubelet's path of every emptyDir volume


class Carry(enum.Enum):
    CHANGES = "changes"
    WHOLE = "whole"
    NONE = "left alone"


@dataclasses.dataclass(frozen=True)
class Mount:
    point: str
    source_root: str  # the path inside its own filesystem (mountinfo's 4th field)
    fstype: str
    carry: Carry


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        root, point, fstype = _unescape(fields[3]), _unescape(fields[4]), fields[sep + 1]
        if point == "/":
            carry = Carry.CHANGES
        elif point == SHM or EMPTY_DIR in root:
            carry = Carry.WHOLE
        else:
            carry = Carry.NONE
        mounts.append(Mount(point, root, fstype, carry))
    # A later mount over the same point hides the earlier one: the last one counts.
    return list({m.point: m for m in mounts}.values())


def current() -> list[Mount]:
    with open(MOUNTINFO) as f:
        return parse(f.read())
