"""A process is more than its memory: what a migration carries besides it, end to end.

Each test runs a real program under crikpy in a real container and migrates it with `podman
stop` and a new container (real CRIU), then judges from what the program itself prints or what
its peers saw: its files, its named shared memory, its version, its TCP peers, and what happens
when a checkpoint cannot be restored. docs/what-migrates.md is the contract these tests hold.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.podman import CHECKPOINT_DIR, RUN_FLAGS, Container, events, podman

pytestmark = pytest.mark.e2e

FILES_LINE = re.compile(r"^files tick=(\d+) records=(\d+) appended=(\d+) sqlite=(\d+) wal=(\d+) "
                        r"shm=(\d+) runtime=(\d+)$")


def _restored(c: Container) -> dict:
    c.wait_for(lambda text: any(events(text, e) for e in ("restore.done", "restore.skipped",
                                                          "restore.failed", "restore.cold")),
               what="the start's decision")
    done = events(c.logs(), "restore.done")
    assert done, f"it did not restore: {c.logs()[-3000:]}"
    return done[0]


def _listing(image: str, volume, name: str) -> list[dict]:
    out = podman("run", "--rm", *RUN_FLAGS, "-v", f"{volume}:{CHECKPOINT_DIR}",
                 "--entrypoint", "crikpy", image, "checkpoints", "list", "--json", "--name", name)
    return json.loads(out.stdout)


def test_files_changed_made_and_removed_at_run_time_come_back_with_the_memory(
        images, containers, volume):
    """Found 1 and 2: files of the image changed in place (pwrite, O_APPEND, SQLite with a
    rollback journal), files made at run time and kept open (SQLite in WAL mode, /var/tmp), a
    named POSIX shared-memory segment, and files deleted, renamed and chmodded: after each of
    three migrations every one is as the restored memory last left it."""
    ticks: list[int] = []
    for generation in range(4):
        c = containers(images["matrix"], volume=volume, env={"CRIKPY_NAME": "files"},
                       command=["python3", "/opt/matrix/files.py"])
        if generation:
            _restored(c)
        c.wait_for(lambda _: len(c.lines("files ")) >= 3, what="three ticks")
        lines = [FILES_LINE.match(ln) for ln in c.lines("files ")]
        for m in lines:
            tick, *found = (int(g) for g in m.groups())
            assert found == [tick + 1] * 6, f"generation {generation}: a file lags: {m.group(0)}"
        first = int(lines[0].group(1))
        assert first == (ticks[-1] + 1 if ticks else 0), "the workload did not carry on"
        listing = c.exec("sh", "-c", "cd /opt/matrix/data && ls && stat -c '%a %n' mode-file "
                         "&& test -d /var/tmp/made-at-run-time && echo made")
        assert "deleteme" not in listing and "old-name" not in listing, listing
        assert "new-name" in listing and "600 mode-file" in listing and "made" in listing
        assert c.stop() == 0, c.logs()[-3000:]
        ticks = [int(FILES_LINE.match(ln).group(1)) for ln in c.lines("files ")]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_python_multiprocessing_carries_on_with_each_start_method(images, containers, volume,
                                                                   method):
    """Found 7: forkserver was refused ("Use link-remap option")."""
    seen: list[tuple[int, int]] = []
    for generation in range(3):
        c = containers(images["matrix"], volume=volume, env={"CRIKPY_NAME": f"mp-{method}",
                                                             "START_METHOD": method},
                       command=["python3", "/opt/matrix/mp.py"])
        if generation:
            _restored(c)
        c.wait_for(lambda _: len(c.lines("mp ")) >= 3, what="three counts")
        counts = [tuple(int(x) for x in ln.split()[2:4]) for ln in c.lines("mp ")]
        if seen:
            assert counts[0] == (seen[-1][0] + 1, seen[-1][1]), "the worker did not carry on"
        assert c.stop() == 0, c.logs()[-3000:]
        assert events(c.logs(), "checkpoint.committed"), c.logs()[-3000:]
        seen = [tuple(int(x) for x in ln.split()[2:4]) for ln in c.lines("mp ")]


def _build(tag: str, context: Path, containerfile: str) -> str:
    (context / "Containerfile").write_text(containerfile)
    subprocess.run(["podman", "build", "--runtime", "runc", "--pull=never", "-q", "-t", tag,
                    str(context)], check=True, capture_output=True, timeout=600)
    return tag


VERSION_LINE = re.compile(r"^version (\d+) note (\S+) tick (\d+) pid (\d+)$")


def _versions(c: Container) -> list[tuple[int, str, int]]:
    return [(int(m.group(1)), m.group(2), int(m.group(3)))
            for ln in c.lines("version ") if (m := VERSION_LINE.match(ln))]


NEW_VERSIONS = {
    # a changed script, same argv: the new code must run
    "script": ("RUN echo 'VERSION = 2' > /opt/matrix/version.py", {}, "/opt/matrix"),
    # a changed binary (another size): CRIU failed twice per checkpoint, then a cold start
    "binary": ("RUN echo 'VERSION = 2' > /opt/matrix/version.py "
               "&& printf x >> /usr/local/bin/matrix-python", {}, "/usr/local/bin/matrix-python"),
    # the same image with a changed environment value
    "environment": (None, {"RELEASE_NOTE": "two"}, "environment"),
}


@pytest.mark.parametrize("change", NEW_VERSIONS, ids=NEW_VERSIONS)
def test_a_new_version_starts_as_the_new_version(images, containers, volume, tmp_path, change):
    """Found 3: a rollout is a SIGTERM that commits a checkpoint; the next pod, of the new
    version, must start it cold and say what changed, keeping the old checkpoint aside."""
    step, env, named = NEW_VERSIONS[change]
    command = ["matrix-python", "/opt/matrix/versioned.py"]
    base = {"CRIKPY_NAME": f"rollout-{change}", "RELEASE_NOTE": "one"}
    old = containers(images["matrix"], volume=volume, env=base, command=command)
    old.wait_for(lambda _: len(_versions(old)) >= 3, what="three ticks")
    assert old.stop() == 0
    [committed] = [e["id"] for e in events(old.logs(), "checkpoint.committed")]

    image = images["matrix"]
    if step:
        image = _build(f"localhost/crikpy-matrix-{change}:test", tmp_path,
                       f"FROM {images['matrix']}\n{step}\n")
    new = containers(image, volume=volume, env={**base, **env}, command=command)
    new.wait_for(lambda _: len(_versions(new)) >= 2, what="the new version's ticks")
    version, note, tick = _versions(new)[0]
    assert tick == 0, f"the old process was restored: {new.logs()[-3000:]}"
    assert (version, note) == ((1, "two") if change == "environment" else (2, "one"))
    [cold] = events(new.logs(), "restore.new_version")
    assert cold["id"] == committed and named in str(cold["changed"]), cold
    assert not events(new.logs(), "restore.failed")
    listing = {i["id"]: i for i in _listing(images["crikpy"], volume, base["CRIKPY_NAME"])}
    assert listing[committed]["status"] == "committed", "the old version's checkpoint was lost"
    assert not listing[committed]["latest"]
    # The new version checkpoints and restores as itself.
    assert new.stop() == 0
    again = containers(image, volume=volume, env={**base, **env}, command=command)
    assert _restored(again)["id"] != committed
    again.wait_for(lambda _: len(_versions(again)) >= 1, what="a tick")
    assert _versions(again)[0][:2] == (version, note)
    assert _versions(again)[0][2] == _versions(new)[-1][2] + 1


def test_a_restart_of_the_same_version_restores_whatever_differs_per_pod(
        images, containers, volume):
    """No false positives: the pod's name, UID, IP and host name differ between pods of a
    Deployment, and the service links Kubernetes adds change with the namespace's services."""
    command = ["matrix-python", "/opt/matrix/versioned.py"]
    per_pod = [{"POD_NAME": "web-1", "POD_UID": "u-1", "POD_IP": "10.0.0.1",
                "DB_SERVICE_HOST": "10.1.0.1", "DB_PORT": "tcp://10.1.0.1:5432"},
               {"POD_NAME": "web-2", "POD_UID": "u-2", "POD_IP": "10.0.0.2",
                "DB_SERVICE_HOST": "10.1.0.9", "DB_PORT": "tcp://10.1.0.9:5432",
                "CACHE_SERVICE_HOST": "10.1.0.3"}]
    first = containers(images["matrix"], volume=volume, command=command,
                       env={"CRIKPY_NAME": "same-version", **per_pod[0]},
                       extra=["--hostname", "web-1"])
    first.wait_for(lambda _: len(_versions(first)) >= 3, what="three ticks")
    assert first.stop() == 0
    second = containers(images["matrix"], volume=volume, command=command,
                        env={"CRIKPY_NAME": "same-version", **per_pod[1]},
                        extra=["--hostname", "web-2"])
    _restored(second)
    second.wait_for(lambda _: len(_versions(second)) >= 1, what="a tick")
    assert _versions(second)[0][2] == _versions(first)[-1][2] + 1


class _LockServer(socketserver.ThreadingTCPServer):
    """A peer outside the container that ties a lock to a connection, as a database ties a
    transaction or an advisory lock to a session: `LOCK name` (OK or BUSY), `PING`, `COMMIT`.
    A lock is released when its connection ends; `ended` records each end as the peer saw it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.holders: dict[str, object] = {}
        self.commits = 0
        self.ended: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _LockHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _LockHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: _LockServer = self.server  # type: ignore[assignment]
        how = "FIN"
        try:
            for line in self.rfile:
                word, _, arg = line.decode().strip().partition(" ")
                with server.lock:
                    if word == "LOCK":
                        answer = "OK" if server.holders.setdefault(arg, self) is self else "BUSY"
                    elif word == "COMMIT":
                        server.commits += 1
                        answer = "COMMITTED"
                    else:
                        answer = "PONG"
                self.wfile.write(f"{answer}\n".encode())
        except ConnectionResetError:
            how = "RST"
        with server.lock:
            for name in [n for n, h in server.holders.items() if h is self]:
                del server.holders[name]
            server.ended.append(how)


@pytest.fixture
def lock_server():
    server = _LockServer()
    yield server
    server.shutdown()
    server.server_close()


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_after_a_committed_checkpoint_peers_learn_the_connection_ended(
        images, containers, volume, lock_server):
    """Found 4b: the dumped sockets were dropped in repair mode, so the peer never heard of the
    end, kept the lock, and the restored client found its own ghost holding it (BUSY)."""
    env = {"CRIKPY_NAME": "lock-client", "LOCK_ADDR": lock_server.address}
    first = containers(images["matrix"], volume=volume, env=env,
                       command=["python3", "/opt/matrix/lockclient.py"])
    first.wait_for(lambda _: "lock OK connected" in first.logs(), what="the lock")
    first.wait_for(lambda _: len(first.lines("lock PONG")) >= 2, what="two pings")
    assert first.stop() == 0 and events(first.logs(), "checkpoint.committed")
    _wait(lambda: lock_server.ended, "the peer to see the connection end")
    assert not lock_server.holders, "the lock is still held by the dumped connection"

    second = containers(images["matrix"], volume=volume, env=env,
                        command=["python3", "/opt/matrix/lockclient.py"])
    _restored(second)
    second.wait_for(lambda _: second.lines("lock ") and second.lines("lock PONG"),
                    what="the restored client's session")
    assert "lock OK connected" in second.logs(), second.logs()[-2000:]
    assert "lock BUSY" not in second.logs()


def test_after_a_failed_checkpoint_connections_work_as_before_the_dump(
        images, containers, volume, lock_server):
    """Found 4a: a checkpoint that fails after the dump (here the store hangs at the pointer
    write: its lock is held) resumes the workload, whose last exchange on shutdown must reach
    the peer and its answer come back, as without crikpy."""
    env = {"CRIKPY_NAME": "lock-client", "LOCK_ADDR": lock_server.address,
           "CRIKPY_GRACE_PERIOD": "8"}
    c = containers(images["matrix"], volume=volume, env=env,
                   command=["python3", "/opt/matrix/lockclient.py"])
    c.wait_for(lambda _: len(c.lines("lock PONG")) >= 2, what="two pings")
    fd = os.open(volume / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert c.stop(timeout=30) == 0, c.logs()[-3000:]
    finally:
        os.close(fd)
    assert events(c.logs(), "checkpoint.failed"), c.logs()[-3000:]
    assert "final COMMITTED" in c.logs(), c.logs()[-3000:]
    assert lock_server.commits == 1


def test_a_failed_restore_falls_back_to_the_previous_checkpoint_in_the_same_start(
        images, containers, volume, tmp_path):
    """Found 6: after the latest checkpoint failed in CRIU and was quarantined, the previous one
    failed too, with a false node fault (its root was taken by the failed restore's zombie)."""
    data = tmp_path / "data"  # a volume that follows the pod, which a checkpoint leaves alone
    data.mkdir()
    code = ("import os, signal, time\n"
            "held = [open('/data/a', 'a')]\n"
            "signal.signal(signal.SIGUSR1, lambda *_: held.append(open('/data/b', 'a')))\n"
            "n = 0\n"
            "while True:\n"
            "    print(f'count {n} files {len(held)}', flush=True); n += 1; time.sleep(0.2)\n")
    env = {"CRIKPY_NAME": "fallback", "CRIKPY_RESTORE_ATTEMPTS": "1"}
    run = dict(volume=volume, env=env, command=["python3", "-c", code],
               extra=["-v", f"{data}:/data"])
    first = containers(images["matrix"], **run)
    first.wait_for(lambda _: len(first.lines("count ")) >= 3, what="three counts")
    assert first.stop() == 0
    older = events(first.logs(), "checkpoint.committed")[0]["id"]
    last_of_first = int(first.lines("count ")[-1].split()[1])

    second = containers(images["matrix"], **run)
    _restored(second)
    second.kill("USR1")
    second.wait_for(lambda _: "files 2" in second.logs(), what="the second file")
    assert second.stop() == 0
    (data / "b").unlink()  # the latest checkpoint needs it: CRIU fails to restore it

    third = containers(images["matrix"], **run)
    done = _restored(third)
    assert done["id"] == older, third.logs()[-3000:]
    third.wait_for(lambda _: third.lines("count "), what="a count")
    assert int(third.lines("count ")[0].split()[1]) == last_of_first + 1
    assert not events(third.logs(), "restore.failed") or all(
        "node" not in e.get("fault", "") for e in events(third.logs(), "restore.failed"))


def test_a_checkpoint_that_no_node_could_restore_is_refused_before_the_dump(
        images, containers, volume):
    """Found 5: 1,000 shared anonymous mappings committed under nofile=1024, then every start
    exited 178 under that same limit, forever. The limit is known at the dump: refuse there,
    naming it, and the workload gets its SIGTERM."""
    c = containers(images["matrix"], volume=volume, env={"CRIKPY_NAME": "shared-anon"},
                   command=["python3", "/opt/matrix/shared-anon.py"])
    c.wait_for(lambda _: len(c.lines("shared 1000 ")) >= 2, what="the mappings")
    assert c.stop() == 128 + 15, "the workload did not get its SIGTERM"
    [failed] = events(c.logs(), "checkpoint.failed")
    assert "open-file limit" in failed["error"] and "1024" in failed["error"], failed


def test_restore_attempts_on_nodes_that_cannot_restore_are_bounded(images, containers, volume):
    """Found 5, the class: whatever the cause, no checkpoint is tried forever. A node fault
    counts too; after --restore-attempts the checkpoint is quarantined (releasable) and the
    start is cold."""
    code = ("import os, itertools, time\n"
            "held = [os.open('/dev/null', os.O_RDONLY) for _ in range(800)]\n"
            "for n in itertools.count():\n"
            "    print(f'count {n}', flush=True); time.sleep(0.2)\n")
    env = {"CRIKPY_NAME": "bounded", "CRIKPY_RESTORE_ATTEMPTS": "2"}
    first = containers(images["matrix"], volume=volume, env=env, command=["python3", "-c", code])
    first.wait_for(lambda _: len(first.lines("count ")) >= 3, what="three counts")
    assert first.stop() == 0
    small = ["--ulimit", "nofile=850:850"]
    c = containers(images["matrix"], volume=volume, env=env, extra=small,
                   command=["python3", "-c", code])
    assert c.wait() == 178, c.logs()[-3000:]
    c = containers(images["matrix"], volume=volume, env=env, extra=small,
                   command=["python3", "-c", code])
    c.wait_for(lambda _: c.lines("count "), what="the cold start")
    assert c.lines("count ")[0] == "count 0"
    assert [i["status"] for i in _listing(images["crikpy"], volume, "bounded")] == ["quarantined"]


def test_a_process_outside_the_tree_is_named_at_the_dump(images, containers, volume):
    """Found 7: a daemon the workload double-forked away was dropped without a word."""
    c = containers(images["matrix"], volume=volume, env={"CRIKPY_NAME": "daemon"},
                   command=["sh", "/opt/matrix/daemon.sh"])
    c.wait_for(lambda _: len(c.lines("count ")) >= 2, what="two counts")
    daemon = int(c.lines("daemon ")[0].split()[1])
    assert c.stop() == 0
    [outside] = events(c.logs(), "checkpoint.outside_tree")
    assert outside["processes"][0]["pid"] == daemon and "sleep" in outside["processes"][0]["command"]

    refusing = containers(images["matrix"], env={"CRIKPY_NAME": "daemon-refused",
                                                 "CRIKPY_OUTSIDE_TREE": "refuse"},
                          command=["sh", "/opt/matrix/daemon.sh"])
    refusing.wait_for(lambda _: len(refusing.lines("count ")) >= 2, what="two counts")
    assert refusing.stop() == 128 + 15
    [failed] = events(refusing.logs(), "checkpoint.failed")
    assert "outside" in failed["error"] and "sleep" in failed["error"]


def test_deleted_but_open_files_come_back_up_to_the_ghost_limit(images, containers, volume):
    """Found 7: the ghost limit had no setting. A 3 MiB file the workload deleted but holds
    open comes back with its content; with --ghost-limit-mib 1 the dump is refused instead, and
    the workload gets its SIGTERM."""
    code = ("import hashlib, os, time\n"
            "f = open('/var/tmp/ghost', 'w+b'); f.write(os.urandom(3 << 20)); f.flush()\n"
            "os.unlink('/var/tmp/ghost')\n"
            "n = 0\n"
            "while True:\n"
            "    f.seek(0)\n"
            "    print(f'ghost {hashlib.sha256(f.read()).hexdigest()} {n}', flush=True)\n"
            "    n += 1; time.sleep(0.2)\n")
    command = ["python3", "-c", code]
    small = containers(images["matrix"], volume=volume, command=command,
                       env={"CRIKPY_NAME": "ghost-small", "CRIKPY_GHOST_LIMIT_MIB": "1"})
    small.wait_for(lambda _: len(small.lines("ghost ")) >= 2, what="the ghost file")
    assert small.stop() == 128 + 15
    [failed] = events(small.logs(), "checkpoint.failed")
    assert "ghost" in failed["error"].lower(), failed

    first = containers(images["matrix"], volume=volume, command=command,
                       env={"CRIKPY_NAME": "ghost"})
    first.wait_for(lambda _: len(first.lines("ghost ")) >= 2, what="the ghost file")
    assert first.stop() == 0
    second = containers(images["matrix"], volume=volume, command=command,
                        env={"CRIKPY_NAME": "ghost"})
    _restored(second)
    second.wait_for(lambda _: second.lines("ghost "), what="the ghost file again")
    digest, n = second.lines("ghost ")[0].split()[1:]
    assert (digest, int(n)) == (first.lines("ghost ")[-1].split()[1],
                                int(first.lines("ghost ")[-1].split()[2]) + 1)


def test_thousands_of_shared_memory_regions_checkpoint_and_restore(images, containers,
                                                                   s3_server):
    """Found 7: each shared-memory region was an upload of its own thread, all at once; against
    S3 thousands of them failed the dump ("can't start new thread" under the container's
    process limit)."""
    from tests.helpers import s3_env

    env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "many-regions",
           "MAPPINGS": "3000", "CRIKPY_GRACE_PERIOD": "120"}
    roomy = ["--ulimit", "nofile=20000:20000"]
    command = ["python3", "/opt/matrix/shared-anon.py"]
    first = containers(images["matrix"], env=env, command=command, extra=roomy)
    first.wait_for(lambda _: len(first.lines("shared 3000 ")) >= 2, what="the mappings")
    assert first.stop(timeout=150) == 0, first.logs()[-3000:]
    second = containers(images["matrix"], env=env, command=command, extra=roomy)
    _restored(second)
    second.wait_for(lambda _: second.lines("shared "), what="the restored mappings")
    intact, tick = (int(x) for x in second.lines("shared ")[0].split()[1:])
    assert intact == 3000 and tick == int(first.lines("shared ")[-1].split()[2]) + 1


def test_a_checkpoint_written_before_container_files_and_versions_still_restores(
        images, containers, volume):
    """A checkpoint as crikpy wrote it before it carried the container's files and recorded the
    program: no `program` in the manifest, no container-files objects. It restores as before,
    with no version check (there is nothing to compare) and nothing put back."""
    env = {"CRIKPY_NAME": "older"}
    first = containers(images["counter"], volume=volume, env=env)
    first.wait_for(lambda _: len(first.lines("count ")) >= 3, what="three counts")
    assert first.stop() == 0
    [ckpt] = [e["id"] for e in events(first.logs(), "checkpoint.committed")]
    where = volume / "older" / "checkpoints" / ckpt
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest.pop("program")
    carried = [f for f in manifest["files"] if f["path"].startswith("container-files.")]
    assert len(carried) == 2, manifest["files"]
    manifest["files"] = [f for f in manifest["files"] if f not in carried]
    for f in carried:
        (where / "files" / f["path"]).unlink()
    (where / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))

    second = containers(images["counter"], volume=volume, env=env)
    assert _restored(second)["id"] == ckpt
    assert not events(second.logs(), "files.restored")
    second.wait_for(lambda _: second.lines("count "), what="a count")
    assert int(second.lines("count ")[0].split()[1]) == int(first.lines("count ")[-1].split()[1]) + 1
