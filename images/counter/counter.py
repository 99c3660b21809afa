"""The demo workload: counts up, one line every 0.2 s.

After a restore the count goes on from where it stopped; a cold start begins again at 0.
With COUNT_TO=N it stops after printing N and exits with EXIT_CODE (default 0).
"""

import itertools
import os
import sys
import time

count_to = int(os.environ.get("COUNT_TO", "-1"))
for n in itertools.count():
    print(f"count {n} pid {os.getpid()}", flush=True)
    if n == count_to:
        sys.exit(int(os.environ.get("EXIT_CODE", "0")))
    time.sleep(0.2)
