"""Several threads, each with its own counter, printing it (`thread <k> <count> <native thread id>`):
each must carry on after a restore."""

import os
import threading
import time

THREADS = int(os.environ.get("THREADS", "4"))
lock = threading.Lock()


def work(k: int) -> None:
    n = 0
    while True:
        with lock:
            print(f"thread {k} {n} {threading.get_native_id()}", flush=True)
        n += 1
        time.sleep(0.1 + 0.03 * k)


for k in range(THREADS):
    threading.Thread(target=work, args=(k,), daemon=True).start()
while True:
    time.sleep(3600)
