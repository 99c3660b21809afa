"""crikpy's errors, whose fault each one is, and the exit code each fault ends the process with.

Every error a user can cause or fix carries a one-line message that names what is wrong and how
to fix it; `cli.py` prints that line and exits with the code of the error's Fault. Whose fault a
failure is gets decided where it is raised, so that a start can tell a checkpoint to quarantine
from a node to leave or a store to wait for. crikpy's own codes live in 170-181, out of the
range workloads and shells use (0-125, 126/127, 128+N for signal N), so a pod's exit code says at
once whether the workload or crikpy ended it (143 is a SIGTERM's, as for any process). FAULTS
is the one table; docs/settings.md's is generated from it
(tests/docs/generate_reference.py).
"""

from __future__ import annotations

import enum


class Fault(enum.Enum):
    """Whose fault a failure is: what a start or a stop does about it follows from this."""

    BUG = "bug"  # crikpy's own: an exception it did not expect
    USAGE = "usage"
    CONFIG = "config"
    STORE = "store"
    NOT_FOUND = "not found"
    CHECKPOINT = "checkpoint"  # the checkpoint's own: it is quarantined
    POLICY = "policy"  # --on-restore-failure=fail said to fail rather than start cold
    CRIU = "criu"  # CRIU failed and did not say whose fault it was
    NODE = "node"  # this node's: the checkpoint is kept for another
    NEWER = "newer"
    PREFLIGHT = "preflight"
    RACE = "race"  # another pod of the same name moved the pointer first
    INTERRUPTED = "interrupted"  # a SIGTERM stopped a step that loses nothing by stopping


# fault -> (exit code, what it means): the one table.
FAULTS: dict[Fault, tuple[int, str]] = {
    Fault.BUG: (170, "internal error (a bug: please report the logged traceback)"),
    Fault.USAGE: (171, "usage: a bad flag or argument, or nothing to run"),
    Fault.CONFIG: (172, "config: a bad setting in a flag, variable or config file"),
    Fault.STORE: (173, "store: unreachable, refused or too slow"),
    Fault.NOT_FOUND: (174, "checkpoint not found"),
    Fault.CHECKPOINT: (175, "corrupt checkpoint"),
    Fault.POLICY: (176, "restore failed with --on-restore-failure=fail"),
    Fault.CRIU: (177, "CRIU failed"),
    Fault.NODE: (178, "this node cannot restore (privileges, CRIU missing, disk, PID or port "
                      "in use); the checkpoint is kept"),
    Fault.NEWER: (179, "newer: the checkpoint was written by a newer crikpy; it is kept"),
    Fault.PREFLIGHT: (180, "`crikpy check` found a problem"),
    Fault.RACE: (181, "race lost: another pod of the same name moved the latest "
                      "pointer first; what it wrote stands"),
    # What a process killed by SIGTERM reports, which is what this is.
    Fault.INTERRUPTED: (143, "interrupted: a SIGTERM stopped a restore; nothing was lost"),
}
# code -> what it means, for `--help`, docs/settings.md and the test between them.
EXIT_CODES: dict[int, str] = dict(FAULTS.values())
INTERNAL_EXIT_CODE = FAULTS[Fault.BUG][0]
USAGE_EXIT_CODE = FAULTS[Fault.USAGE][0]
# The shell's codes for a command that cannot be run, as tini and dumb-init use them too.
COMMAND_NOT_FOUND, COMMAND_NOT_EXECUTABLE = 127, 126


class CrikpyError(Exception):
    """A failure with a one-line, user-facing explanation."""

    fault = Fault.BUG
    # CRIU's own log of the restore that failed with this error, kept beside a quarantined
    # checkpoint; set by the migrator where CRIU ran, None elsewhere.
    criu_log: bytes | None = None

    @property
    def exit_code(self) -> int:
        return FAULTS[self.fault][0]


class ConfigError(CrikpyError):
    """The config file, a flag or an environment variable has a bad value."""

    fault = Fault.CONFIG


class StoreError(CrikpyError):
    """The checkpoint store cannot be reached, read or written."""

    fault = Fault.STORE


class CheckpointNotFound(CrikpyError):
    """A checkpoint id that the store does not hold."""

    fault = Fault.NOT_FOUND


class CorruptCheckpoint(CrikpyError):
    """A checkpoint whose manifest or files do not verify: its own fault; it is never restored."""

    fault = Fault.CHECKPOINT


class RestoreFailed(CrikpyError):
    """A restore failed and the policy says to fail rather than cold-start."""

    fault = Fault.POLICY


class CriuError(CrikpyError):
    """CRIU refused or failed a request; the message points at its log."""

    fault = Fault.CRIU


class NodeFault(CrikpyError):
    """This node cannot restore a checkpoint that may well be good: the checkpoint is kept.

    No privileges, CRIU missing, the work dir too small, a PID or port in use, a kernel feature
    missing. The pod exits and the kubelet restarts it, perhaps on another node.
    """

    fault = Fault.NODE


class CriuUnavailable(NodeFault):
    """CRIU or its bindings are not installed here: the machine's fault, never the checkpoint's."""


class NewerCheckpoint(CrikpyError):
    """A checkpoint written by a newer crikpy: kept untouched for a crikpy that can read it."""

    fault = Fault.NEWER


class PreflightFailed(CrikpyError):
    """`crikpy check` found something a checkpoint or restore needs missing."""

    fault = Fault.PREFLIGHT


class RaceLost(CrikpyError):
    """Another pod with the same name moved the latest pointer first: this one's write did not
    land, and what the other pod wrote stands."""

    fault = Fault.RACE


class Interrupted(CrikpyError):
    """A SIGTERM arrived while crikpy was still restoring: it stops, and loses nothing."""

    fault = Fault.INTERRUPTED
