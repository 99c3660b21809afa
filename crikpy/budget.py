"""Every time budget crikpy keeps, and the bounds on counts, in one place.

A checkpoint's time comes from the termination grace period (the kubelet's SIGKILL ends it);
everything else crikpy waits for is bounded here too, so that no step can hang a start or a
stop. "No deadline" given to a store call means STORE_CALL_SECONDS, on every store.
"""

from __future__ import annotations

# A store call given no deadline (the CLI, a start's records) gives up after this; transient
# failures are retried within it.
STORE_CALL_SECONDS = 30.0
# Setting a good restore's attempt count back, or taking back an attempt that was not the
# checkpoint's fault: the workload already runs (or a SIGTERM is pending), so briefly.
RESET_ATTEMPTS_SECONDS = 3.0
# Retention and sweeping after a commit: best effort, never a failure of the commit.
HOUSEKEEPING_SECONDS = 10.0
# Asking CRIU its version, once at a start.
CRIU_VERSION_SECONDS = 10.0
# CRIU restoring a tree from images already on local disk (8 GiB take about a minute here).
CRIU_RESTORE_SECONDS = 600.0
# Clearing the pointer as a SIGTERM is passed on to the workload: out of its shutdown time.
CLEAR_SECONDS = 2.0

# The most restore attempts a checkpoint may be given (--restore-attempts), and where a count
# read from the store (not sealed) is capped.
MAX_RESTORE_ATTEMPTS = 100
