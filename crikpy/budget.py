"""Every time budget crikpy keeps, in one place.

A checkpoint's time comes from the termination grace period (the kubelet's SIGKILL ends it);
everything else crikpy waits for is bounded here too, so that no step can hang a start or a
stop. "No deadline" given to a store call means STORE_CALL_SECONDS, on every store.
"""

from __future__ import annotations

# A store call given no deadline (the CLI, a start's records) gives up after this; transient
# failures are retried within it.
STORE_CALL_SECONDS = 30.0
