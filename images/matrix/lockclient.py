"""A database client that holds a lock tied to its connection, like a transaction or an advisory
lock: it connects to the lock server at $LOCK_ADDR (host:port), takes lock `L` and keeps the
connection. On SIGTERM it makes one last exchange on that connection (`COMMIT`) and prints the
answer before it exits, as a client commits on shutdown. After a restore its old connection is
gone: it reconnects and takes the lock again, which must not be held by its own ghost.

Prints `lock <answer> tick <n>` each tick and `final <answer>` on SIGTERM."""

import os
import signal
import socket
import sys
import time

host, port = os.environ["LOCK_ADDR"].rsplit(":", 1)


def connect() -> socket.socket:
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"LOCK L\n")
    print(f"lock {s.makefile().readline().strip()} connected", flush=True)
    return s


conn = connect()


def on_sigterm(signum, frame):
    try:
        conn.sendall(b"COMMIT\n")
        replies = conn.makefile()
        answer = replies.readline().strip() or "EOF"
        if answer == "PONG":  # the answer to the tick's PING that this handler interrupted
            answer = replies.readline().strip() or "EOF"
    except OSError as e:
        answer = f"error {e.errno}"
    print(f"final {answer}", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
tick = 0
while True:
    try:
        conn.sendall(b"PING\n")
        answer = conn.makefile().readline().strip()
        if not answer:
            raise ConnectionResetError("closed by the server")
    except OSError:
        conn.close()
        conn = connect()  # a restore closes it: start a new session
        continue
    print(f"lock {answer} tick {tick}", flush=True)
    tick += 1
    time.sleep(0.2)
