"""A workload with real state, for proving that a restore continues it.

It holds STATE_MIB MiB of memory that changes every tick, runs CHILDREN child processes that
send heartbeats through pipes, appends one line per tick to a journal file it keeps open, and
(with PORT set) answers HTTP on a listening TCP socket. Every tick it prints one line:

    stateful {"tick": N, "digest": ..., "children": {pid: beat}, "journal_bytes": ...}

The memory's content after tick N is a pure function of (SEED, STATE_MIB, COMPRESSIBLE, N):
`expected_digest` recomputes it from scratch, so a reader can tell restored memory from lost or corrupted memory.
With HOLD_PERF_EVENT=1, or from the moment it gets SIGUSR1, it also holds a perf-event fd, which
CRIU cannot dump: that is how the tests make a checkpoint fail.
"""

import ctypes
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

MIB = 1024 * 1024
CHILD = (
    "import sys, time\n"
    "beat = 0\n"
    "while True:\n"
    "    print(beat, flush=True)\n"
    "    beat += 1\n"
    "    time.sleep(0.2)\n"
)


# COMPRESSIBLE=1: each 4 KiB page is 2 KiB of hex text and 2 KiB of zeros, like a heap of
# strings and half-used pages, instead of random bytes (for the compression benchmark).
COMPRESSIBLE = os.environ.get("COMPRESSIBLE") == "1"


def chunk(seed: str, index: int, tick: int) -> bytes:
    key = f"{seed}:{index}:{tick}".encode()
    if not COMPRESSIBLE:
        return hashlib.shake_128(key).digest(MIB)
    text = hashlib.shake_128(key).hexdigest(MIB // 4).encode()  # 2 KiB of text a page
    return b"".join(text[i:i + 2048] + bytes(2048) for i in range(0, len(text), 2048))


def expected_digest(seed: str, mib: int, tick: int) -> str:
    """The digest the memory must have after `tick`, rebuilt from nothing."""
    sha = hashlib.sha256()
    for j in range(mib):
        last = tick - ((tick - j) % mib) if tick >= j else -1
        sha.update(chunk(seed, j, last))
    return sha.hexdigest()


def hold_perf_event() -> int:
    class Attr(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                    ("config", ctypes.c_uint64), ("rest", ctypes.c_byte * 112)]

    attr = Attr(type=1, size=ctypes.sizeof(Attr), config=0)  # software cpu-clock counter
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(298, ctypes.byref(attr), 0, -1, -1, 0)  # perf_event_open, x86_64
    if fd < 0:
        raise OSError(ctypes.get_errno(), "perf_event_open")
    return fd


def main() -> None:
    seed = os.environ.get("SEED", "crikpy")
    mib = int(os.environ.get("STATE_MIB", "256"))
    tick_seconds = float(os.environ.get("TICK_SECONDS", "0.5"))
    journal_path = os.environ.get("JOURNAL", "/var/lib/stateful/journal.log")
    port = int(os.environ.get("PORT", "0"))
    held = []
    if os.environ.get("HOLD_PERF_EVENT") == "1":
        held.append(hold_perf_event())
    signal.signal(signal.SIGUSR1, lambda *_: held.append(hold_perf_event()))

    memory = bytearray(mib * MIB)
    for j in range(mib):
        memory[j * MIB:(j + 1) * MIB] = chunk(seed, j, -1)

    children = {}
    for _ in range(int(os.environ.get("CHILDREN", "2"))):
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
        os.set_blocking(child.stdout.fileno(), False)
        children[child.pid] = child
    beats = {pid: -1 for pid in children}

    os.makedirs(os.path.dirname(journal_path), exist_ok=True)
    journal = open(journal_path, "a", buffering=1)
    state = {}

    if port:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(state).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    tick = 0
    while True:
        j = tick % mib
        memory[j * MIB:(j + 1) * MIB] = chunk(seed, j, tick)
        for pid, child in children.items():
            data = child.stdout.read() or b""
            for line in data.split():
                beats[pid] = int(line)
        journal.write(f"tick {tick}\n")
        state = {"tick": tick, "digest": hashlib.sha256(memory).hexdigest(),
                 "children": {str(p): b for p, b in beats.items()},
                 "journal_bytes": journal.tell(), "pid": os.getpid(), "perf_fds": len(held)}
        print("stateful " + json.dumps(state), flush=True)
        tick += 1
        time.sleep(tick_seconds)


if __name__ == "__main__":
    main()
