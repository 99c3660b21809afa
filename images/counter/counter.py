"""The demo workload: counts up forever, one line every 0.2 s.

After a restore the count goes on from where it stopped; a cold start would begin again at 0.
"""

import itertools
import os
import time

for n in itertools.count():
    print(f"count {n} pid {os.getpid()}", flush=True)
    time.sleep(0.2)
