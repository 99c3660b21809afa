"""A workload whose state lives in files, as ordinary programs keep it. Every tick it writes the
tick to each kind of file, reads each back through a fresh open, and prints what it found:

    files tick=T records=R appended=A sqlite=S wal=W shm=M runtime=X

Each count must be T+1 in every line: one that lags means a file came back older than the
memory that wrote it (a migration reverted or lost it).
- records: a preallocated file from the image, changed in place with pwrite;
- appended: a log from the image, written through an O_APPEND descriptor kept open;
- sqlite: a SQLite database from the image, in rollback-journal mode, connection kept open;
- wal: a SQLite database made at run time, in WAL mode (its -wal and -shm files too);
  SQLite refuses to write through a connection whose file's inode number changed, as it does
  after any move to a new filesystem ("attempt to write a readonly database"): it reopens the
  connection then, prints `reopened <name>`, and carries on from what the file holds;
- shm: a named POSIX shared-memory segment (multiprocessing.shared_memory), kept mapped;
- runtime: a file made at run time under /var/tmp, kept open.
At its cold start it also deletes, renames and chmods files of the image, which a restore must
leave as it left them.
"""

import os
import sqlite3
import struct
import time
from multiprocessing import shared_memory

DATA = "/opt/matrix/data"
RECORD = struct.Struct("<Q")

os.remove(f"{DATA}/deleteme")
os.rename(f"{DATA}/old-name", f"{DATA}/new-name")
os.chmod(f"{DATA}/mode-file", 0o600)
os.mkdir("/var/tmp/made-at-run-time")

records = os.open(f"{DATA}/records.bin", os.O_RDWR)
log = os.open(f"{DATA}/app.log", os.O_WRONLY | os.O_APPEND)
databases = {"sqlite": f"{DATA}/counter.db", "wal": "/var/tmp/wal.db"}
connections = {name: sqlite3.connect(path, isolation_level=None)
               for name, path in databases.items()}
connections["wal"].execute("PRAGMA journal_mode=WAL")
connections["wal"].execute("CREATE TABLE c (n INTEGER)")
connections["wal"].execute("INSERT INTO c VALUES (0)")
# Untracked: the resource tracker would unlink the segment when this process ends.
shm = shared_memory.SharedMemory(name="crikpy-matrix", create=True, size=4096, track=False)
runtime = os.open("/var/tmp/state.bin", os.O_RDWR | os.O_CREAT, 0o644)


def bump(name: str) -> int:
    try:
        connections[name].execute("UPDATE c SET n = n + 1")
    except sqlite3.OperationalError as e:
        if "readonly" not in str(e):
            raise
        print(f"reopened {name}: {e}", flush=True)
        connections[name] = sqlite3.connect(databases[name], isolation_level=None)
        connections[name].execute("UPDATE c SET n = n + 1")
    if name == "wal":
        # Read back through the same connection: SQLite keys its in-process locks by inode
        # number, which a move changes, so a second connection opened after it would not see
        # the first's locks, and in WAL mode its close could drop the first's last frames
        # (docs/what-migrates.md). The journal's is read by a fresh connection each time.
        return connections[name].execute("SELECT n FROM c").fetchone()[0]
    return sqlite3.connect(databases[name]).execute("SELECT n FROM c").fetchone()[0]


def leading_records(path: str) -> int:
    data = open(path, "rb").read()
    n = 0
    while (n + 1) * RECORD.size <= len(data) and RECORD.unpack_from(data, n * RECORD.size)[0] == n + 1:
        n += 1
    return n


tick = 0
while True:
    os.pwrite(records, RECORD.pack(tick + 1), tick * RECORD.size)
    os.write(log, f"line {tick}\n".encode())
    shm.buf[:8] = RECORD.pack(tick + 1)
    os.pwrite(runtime, RECORD.pack(tick + 1), 0)
    found = dict(
        records=leading_records(f"{DATA}/records.bin"),
        appended=len(open(f"{DATA}/app.log").read().splitlines()) - 1,
        sqlite=bump("sqlite"),
        wal=bump("wal"),
        shm=RECORD.unpack(open("/dev/shm/crikpy-matrix", "rb").read(8))[0],
        runtime=RECORD.unpack(open("/var/tmp/state.bin", "rb").read(8))[0],
    )
    print(f"files tick={tick} " + " ".join(f"{k}={v}" for k, v in found.items()), flush=True)
    tick += 1
    time.sleep(0.2)
