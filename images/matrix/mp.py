"""Python multiprocessing with the start method named by $START_METHOD: a worker process counts
and sends each count to the parent over a pipe, and the parent prints `mp <method> <count>
<worker pid>`. The count must carry on, from the same worker, after a restore."""

import multiprocessing
import os
import time


def work(conn) -> None:
    n = 0
    while True:
        conn.send(n)
        n += 1
        time.sleep(0.2)


if __name__ == "__main__":
    method = os.environ.get("START_METHOD", "fork")
    ctx = multiprocessing.get_context(method)
    parent, child = ctx.Pipe()
    worker = ctx.Process(target=work, args=(child,), daemon=True)
    worker.start()
    while True:
        print(f"mp {method} {parent.recv()} {worker.pid}", flush=True)
