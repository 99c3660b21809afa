"""A program that says which version it is: `version <V> tick <n> pid <pid>`, where V comes from
version.py beside it (imported lazily, as programs do for a feature first used late) and from
$RELEASE_NOTE. A rollout of a new version must start the new version, not restore the old."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
tick = 0
while True:
    import version  # noqa: E402  (first imported in the loop, as a late feature would be)

    print(f"version {version.VERSION} note {os.environ.get('RELEASE_NOTE', '-')} tick {tick} "
          f"pid {os.getpid()}", flush=True)
    tick += 1
    time.sleep(0.2)
