"""crikpy's error types and the distinct exit code each one ends the process with.

Every error a user can cause or fix carries a one-line message that names what is wrong and how
to fix it; `cli.py` prints that line and exits with the error's code. crikpy's own codes live in
170-180, out of the range workloads and shells use (0-125, 126/127, 128+N for signal N), so a
pod's exit code says at once whether the workload or crikpy ended it. EXIT_CODES is the one list;
docs/settings.md's table is generated from it (tests/docs/generate_reference.py).
"""

INTERNAL_EXIT_CODE = 170  # a bug in crikpy: an exception it did not expect
USAGE_EXIT_CODE = 171  # a bad flag or argument, or nothing to run
# The shell's codes for a command that cannot be run, as tini and dumb-init use them too.
COMMAND_NOT_FOUND, COMMAND_NOT_EXECUTABLE = 127, 126


class CrikpyError(Exception):
    """A failure with a one-line, user-facing explanation."""

    exit_code = INTERNAL_EXIT_CODE


class ConfigError(CrikpyError):
    """The config file, a flag or an environment variable has a bad value."""

    exit_code = 172


class StoreError(CrikpyError):
    """The checkpoint store cannot be reached, read or written."""

    exit_code = 173


class CheckpointNotFound(CrikpyError):
    """A checkpoint id that the store does not hold."""

    exit_code = 174


class CorruptCheckpoint(CrikpyError):
    """A checkpoint whose manifest or files do not verify: its own fault; it is never restored."""

    exit_code = 175


class RestoreFailed(CrikpyError):
    """A restore failed and the policy says to fail rather than cold-start."""

    exit_code = 176


class CriuError(CrikpyError):
    """CRIU refused or failed a request; the message points at its log."""

    exit_code = 177


class NodeFault(CrikpyError):
    """This node cannot restore a checkpoint that may well be good: the checkpoint is kept.

    No privileges, CRIU missing, the work dir too small, a PID or port in use, a kernel feature
    missing. The pod exits and the kubelet restarts it, perhaps on another node.
    """

    exit_code = 178


class CriuUnavailable(NodeFault):
    """CRIU or its bindings are not installed here: the machine's fault, never the checkpoint's."""


class NewerCheckpoint(CrikpyError):
    """A checkpoint written by a newer crikpy: kept untouched for a crikpy that can read it."""

    exit_code = 179


class PreflightFailed(CrikpyError):
    """`crikpy check` found something a checkpoint or restore needs missing."""

    exit_code = 180


class Interrupted(CrikpyError):
    """A SIGTERM arrived while crikpy was still restoring: it stops, and loses nothing."""

    exit_code = 143  # what a process killed by SIGTERM reports, which is what this is


# code -> what it means, for `--help` and docs/settings.md (generated from it).
EXIT_CODES = {
    INTERNAL_EXIT_CODE: "internal error (a bug: please report the logged traceback)",
    USAGE_EXIT_CODE: "usage: a bad flag or argument, or nothing to run",
    ConfigError.exit_code: "config: a bad setting in a flag, variable or config file",
    StoreError.exit_code: "store: unreachable, refused or too slow",
    CheckpointNotFound.exit_code: "checkpoint not found",
    CorruptCheckpoint.exit_code: "corrupt checkpoint",
    RestoreFailed.exit_code: "restore failed with --on-restore-failure=fail",
    CriuError.exit_code: "CRIU failed",
    NodeFault.exit_code: "this node cannot restore (privileges, CRIU missing, disk, PID or "
                         "port in use); the checkpoint is kept",
    NewerCheckpoint.exit_code: "the checkpoint was written by a newer crikpy; it is kept",
    PreflightFailed.exit_code: "`crikpy check` found a problem",
}
