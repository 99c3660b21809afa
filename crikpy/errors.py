"""crikpy's error types and the distinct exit code each one ends the process with.

Every error a user can cause or fix carries a one-line message that names what is wrong and how
to fix it; `cli.py` prints that line and exits with the error's code.
"""


class CrikpyError(Exception):
    """A failure with a one-line, user-facing explanation."""

    exit_code = 1


class ConfigError(CrikpyError):
    """The config file, a flag or an environment variable has a bad value."""

    exit_code = 3


class StoreError(CrikpyError):
    """The checkpoint store cannot be reached, read or written."""

    exit_code = 4


class CheckpointNotFound(CrikpyError):
    """A checkpoint id that the store does not hold."""

    exit_code = 5


class CorruptCheckpoint(CrikpyError):
    """A checkpoint whose manifest or files do not verify; it is never restored."""

    exit_code = 6


class RestoreFailed(CrikpyError):
    """A restore failed and the policy says to fail rather than cold-start."""

    exit_code = 7


class CriuError(CrikpyError):
    """CRIU refused or failed a request; the message points at its log."""

    exit_code = 8


class CriuUnavailable(CriuError):
    """CRIU or its bindings are not installed here: the machine's fault, never the checkpoint's."""


class PreflightFailed(CrikpyError):
    """`crikpy check` found something a checkpoint or restore needs missing."""

    exit_code = 9


# click's own code for a usage error (bad flag); crikpy uses it too for "nothing to run".
USAGE_EXIT_CODE = 2
