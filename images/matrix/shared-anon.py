"""Many shared anonymous mappings ($MAPPINGS, each one page, each with its own byte), as a
program that allocates shared buffers one by one has. Prints `shared <count> <tick>`."""

import mmap
import os
import time

maps = []
for i in range(int(os.environ.get("MAPPINGS", "1000"))):
    m = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
    m[0] = i % 251
    maps.append(m)
tick = 0
while True:
    intact = sum(m[0] == i % 251 for i, m in enumerate(maps))
    print(f"shared {intact} {tick}", flush=True)
    tick += 1
    time.sleep(0.2)
