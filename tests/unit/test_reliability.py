"""The reliability contract (docs/reliability.md), item by item, with faults injected on the host.

Each test is named for the contract item it proves (`test_item1_...`). These run where no
working CRIU is installed, which is itself a fault: every checkpoint here fails, which is the
path under test. Behaviour that only shows with real CRIU in a container is in
tests/e2e/test_failure_paths.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crikpy import deadline as deadline_mod
from crikpy import errors, recovery
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import Manifest, new_id
from crikpy.errors import CorruptCheckpoint, NodeFault
from crikpy.stores import open_store
from tests.helpers import WORKLOAD, FakeMigrator, Run, crikpy, sample_describe, sample_info, staged


def _manifest_json(**changes) -> bytes:
    raw = sample_describe(id=new_id(), format="crikpy.checkpoint/v1",
               files=[{"path": "images/pages-1.img", "size": 1, "sha256": "0" * 64}])
    raw.update(changes)
    return json.dumps(raw).encode()


def _seed_checkpoint(tmp_path, name="app", **manifest_changes) -> str:
    """A committed checkpoint in the run's file store, with `manifest_changes` written over it."""
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, name)
    m = repo.commit(staged(tmp_path), new_id(), sample_info())
    if manifest_changes:
        raw = json.loads(m.to_json())
        raw.update(manifest_changes)
        (tmp_path / "store" / name / "checkpoints" / m.id / "manifest.json").write_text(
            json.dumps(raw))
    return m.id


# 1. PID 1 never dies of its own error while the workload lives

def test_item1_unwritable_work_dir_at_sigterm_is_a_failed_checkpoint(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
              extra=["--work-dir", str(blocker / "work")])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert out.strip() == "got SIGTERM", "the workload never got its SIGTERM"
    assert code == 0, run.stderr
    assert run.event("checkpoint.failed")
    assert "Traceback" not in run.stderr


def test_item1_unexpected_error_at_top_level_is_one_line_and_code_170(tmp_path):
    # A bug stands in for any error crikpy did not foresee: the store's list raises TypeError.
    code = (
        "import sys\n"
        "import crikpy.stores.file as f\n"
        "def broken(self, prefix, **kw): raise TypeError('injected bug')\n"
        "f.FileStore.list = broken\n"
        "from crikpy.cli import main\n"
        f"sys.argv = ['crikpy', 'checkpoints', 'list', '--store', 'file://{tmp_path}', '--name', 'a']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == errors.INTERNAL_EXIT_CODE
    assert "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("crikpy: internal error")]
    assert "injected bug" in line


def test_item1_truncated_api_answer_is_unavailable_not_a_crash():
    from crikpy.nodestate.crik import CrikSource
    from crikpy.nodestate.policy import NoticeWatcher, decide

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def answer_truncated():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"100\r\n{\"state\": \"shut")  # promises 256 bytes, sends 15, hangs up
            conn.close()

    threading.Thread(target=answer_truncated, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        source = CrikSource(url, "node-a")
        assert decide([source], timeout=3) is None

        class Cloud:  # a cloud source whose notice poll hits the same truncated answer
            name = "aws"

            def notice(self, timeout):
                return source.leaving(timeout)

        watcher = NoticeWatcher([Cloud()], interval=0.05).start()
        time.sleep(0.5)
        alive = [t for t in threading.enumerate() if t.name == "notice-watcher"]
        watcher.stop()
        assert alive, "the notice watcher thread died of the truncated answer"
    finally:
        stop.set()
        server.close()


def test_item1_disk_full_while_downloading_is_a_node_fault(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes("app/object", b"x" * 4096)
    with pytest.raises(NodeFault, match="no space"):
        store.get_file("app/object", "/dev/full")  # ENOSPC on every write


def test_item1_nested_dangling_and_special_additional_paths_pack_without_raising(tmp_path):
    from crikpy.checkpoint import extras

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "file").write_text("x")
    (data / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(data / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(data / "sock"))
    try:
        skipped = extras.pack([str(data), str(data / "sub"), str(data / "sub" / "file")],
                              tmp_path / "extra.tar")
    finally:
        sock.close()
    assert sorted(Path(p).name for p in skipped) == ["fifo", "sock"]


def test_item1_pid1_outlives_its_log_going_away(tmp_path):
    """stderr (the container log) breaks while the workload runs: log lines are lost, the
    signals are still forwarded, and the exit code is still the workload's."""
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD)
    ready = run.readline()
    workload = int(ready.split()[1])
    try:
        run.proc.stderr.close()
        run.proc.send_signal(signal.SIGUSR1)  # forwarded, then logged: signal.forwarded
        time.sleep(1)
        assert run.proc.poll() is None, f"PID 1 died ({run.proc.returncode})"
        assert run.readline() == "got SIGUSR1"
        run.proc.send_signal(signal.SIGINT)
        assert run.readline() == "got SIGINT"
        assert run.proc.wait(30) == 42
    finally:
        for pid in (run.proc.pid, workload):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


RT_WORKLOAD = r"""
import os, signal, sys, time
for s in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
    signal.signal(s, lambda sig, _: print("got", sig, flush=True))
signal.signal(signal.SIGINT, signal.SIG_DFL)
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def test_item1_real_time_signals_are_forwarded_and_pid1_lives(tmp_path):
    run = Run(tmp_path, sys.executable, "-c", RT_WORKLOAD)
    workload = int(run.readline().split()[1])
    try:
        for sig in (signal.SIGRTMIN, signal.SIGRTMIN + 1, signal.SIGRTMAX - 1, signal.SIGRTMAX):
            run.proc.send_signal(sig)
            assert run.readline() == f"got {int(sig)}"
            time.sleep(0.3)
            assert run.proc.poll() is None, f"PID 1 died ({run.proc.returncode})"
        run.proc.send_signal(signal.SIGINT)  # not handled: the workload dies of it
        code, _ = run.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(workload, signal.SIGKILL)
    assert code == 128 + signal.SIGINT, run.stderr
    assert [e["signal"] for e in run.event("signal.forwarded")][:2] == ["SIGRTMIN", "SIGRTMIN+1"]


def test_item1_a_log_reader_that_stalls_does_not_stall_pid1(tmp_path):
    """The container log's reader stops reading (a stuck log shipper): crikpy's log lines are
    held back or dropped, but signals are still forwarded and the exit code is the workload's.
    Before: PID 1 sat in write() once the pipe was full and never forwarded the SIGTERM."""
    read_end, write_end = os.pipe()  # nobody reads read_end
    proc = subprocess.Popen(
        [sys.executable, "-m", "crikpy", "run", "--store", f"file://{tmp_path / 'store'}",
         "--name", "app", "--work-dir", str(tmp_path / "work"), "--pid-floor", "0",
         "--checkpoint-on", "never", "--", sys.executable, "-c", WORKLOAD],
        stdout=subprocess.PIPE, stderr=write_end, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")})
    os.close(write_end)
    try:
        assert proc.stdout.readline().startswith("ready")
        for _ in range(3000):  # each forward logs a line: far more than a pipe holds
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.0005)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        assert code == 0  # the workload's own exit on SIGTERM
    finally:
        proc.kill()
        with os.fdopen(read_end, "rb") as log_pipe:  # the reader catches up (the lines held
            lines = log_pipe.read().decode().splitlines()  # after exit are lost)
    assert lines and all(json.loads(line)["event"] for line in lines)  # none torn


def test_item1_started_with_stderr_closed_the_workload_still_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "crikpy", "run", "--store", f"file://{tmp_path / 'store'}",
         "--name", "app", "--work-dir", str(tmp_path / "work"), "--pid-floor", "0",
         "--", "sh", "-c", "echo ran; exit 5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60,
        preexec_fn=lambda: os.close(2),
        env={k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")})
    assert (proc.returncode, proc.stdout) == (5, "ran\n")


@pytest.mark.parametrize("busy", ["signals forwarded every 0.2 s", "orphans exiting every 0.2 s"])
def test_item1_periodic_checkpoints_keep_their_time_under_a_steady_trickle_of_signals(tmp_path,
                                                                                     busy):
    """Before: the tick ran only after half a second without any signal, so a workload whose
    helpers exit often (each a SIGCHLD), or one that is signalled often, never got a periodic or
    notice checkpoint."""
    orphans = "while :; do (sleep 0.01 &); sleep 0.2; done"
    run = Run(tmp_path, "sh", "-c", orphans if busy.startswith("orphans") else "exec sleep 60",
              extra=["--checkpoint-interval", "1s"])
    try:
        ends = time.monotonic() + 5
        while time.monotonic() < ends:
            if busy.startswith("signals"):
                run.proc.send_signal(signal.SIGWINCH)
            time.sleep(0.2)
    finally:
        run.proc.send_signal(signal.SIGTERM)
        run.finish()
    periodic = [e for e in run.event("checkpoint.started") if e["reason"] == "periodic"]
    assert len(periodic) >= 3, run.stderr  # about 4 in 5 s at a 1 s interval


# 2. The workload starts as under tini: default dispositions, empty mask; its own IPC namespace

def test_item2_workload_starts_with_default_signal_dispositions_and_empty_mask(tmp_path):
    run = Run(tmp_path, "sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                                    "yes | head -n 1 >/dev/null")
    code, out = run.finish()
    fields = dict(line.split(":\t") for line in out.strip().splitlines())
    assert fields == {"SigIgn": "0000000000000000", "SigBlk": "0000000000000000"}, fields
    assert "Broken pipe" not in run.stderr
    assert code == 0


# The workload prints its IPC namespace, crikpy's (its parent's) and one of the namespace's sysctls.
IPC_REPORT = ("sh", "-c", "readlink /proc/self/ns/ipc /proc/$PPID/ns/ipc; "
                          "cat /proc/sys/kernel/msgmnb")
# crikpy in an IPC namespace whose kernel.msgmnb is not the kernel's default (16384), as a pod's
# sysctls would set it; then whatever `then` does before it execs crikpy.
def _ipc_namespace_with_msgmnb(then: str = "") -> list[str]:
    return ["unshare", "--ipc", "--mount", "--propagation", "private", "sh", "-c",
            f'echo 12345 > /proc/sys/kernel/msgmnb && {then} exec "$@"', "sh"]


def test_item2_workload_has_an_ipc_namespace_of_its_own_with_the_containers_ipc_sysctls(tmp_path):
    run = Run(tmp_path, *IPC_REPORT, wrap=_ipc_namespace_with_msgmnb())
    code, out = run.finish()
    own, crikpys, msgmnb = out.split()
    assert own != crikpys and msgmnb == "12345", out
    assert not run.event("workload.ipc_shared") and not run.event("workload.ipc_sysctl_not_copied")
    assert code == 0


def test_item2_a_sysctl_that_cannot_be_copied_is_named(tmp_path):
    run = Run(tmp_path, *IPC_REPORT,
              wrap=_ipc_namespace_with_msgmnb("mount -o bind,ro /proc/sys /proc/sys &&"))
    code, out = run.finish()
    own, crikpys, msgmnb = out.split()
    assert own != crikpys and msgmnb == "16384", out
    assert [e["problem"] for e in run.event("workload.ipc_sysctl_not_copied")] == [
        "kernel.msgmnb stays at the kernel's default, not 12345: Read-only file system"]
    assert code == 0


def test_item2_ipc_namespace_shared_keeps_the_workload_in_crikpys(tmp_path):
    run = Run(tmp_path, *IPC_REPORT, extra=["--ipc-namespace", "shared"])
    code, out = run.finish()
    own, crikpys, _ = out.split()
    assert own == crikpys, out
    assert not run.event("workload.ipc_shared")  # as asked: nothing to explain
    assert code == 0


def test_item2_without_cap_sys_admin_the_workload_shares_crikpys_ipc_namespace(tmp_path):
    run = Run(tmp_path, *IPC_REPORT, wrap=["setpriv", "--inh-caps=-sys_admin",
                                           "--bounding-set=-sys_admin"])
    code, out = run.finish()
    own, crikpys, _ = out.split()
    assert own == crikpys, out
    shared = run.event("workload.ipc_shared")
    assert [e["reason"] for e in shared] == [
        "unshare(CLONE_NEWIPC) failed: Operation not permitted"], run.stderr
    assert "CAP_SYS_ADMIN" in shared[0]["consequence"]
    assert code == 0


# 3. Once the pointer names a checkpoint, it is committed

class FlakyStore:
    """A real file store whose chosen calls fail as a bad network would make them."""

    def __init__(self, inner, *, delete_fails=False, lose_response_of=None):
        self.inner, self.url = inner, inner.url
        self.delete_fails = delete_fails
        self.lose_response_of = lose_response_of  # key suffix: the write lands, the answer is lost

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, key):
        if self.delete_fails:
            raise errors.StoreError(f"delete of {key} failed: ServiceUnavailable (HTTP 503)")
        self.inner.delete(key)

    def put_bytes(self, key, data, **kw):
        if self.lose_response_of and key.endswith(self.lose_response_of):
            self.inner.put_bytes(key, data, **kw)
            # The retry of a write that landed meets its own write: the condition now fails.
            return self.inner.put_bytes(key, data, **kw)
        return self.inner.put_bytes(key, data, **kw)


def test_item3_retention_failure_after_the_pointer_moved_is_not_a_failure(tmp_path):
    inner = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(FlakyStore(inner, delete_fails=True), "app", keep=1)
    first = repo.commit(staged(tmp_path), new_id(), sample_info())
    second = repo.commit(staged(tmp_path), new_id(), sample_info())  # prune of `first` fails: fine
    assert CheckpointRepository(inner, "app").latest_id() == second.id
    assert first.id in {i.id for i in CheckpointRepository(inner, "app").list()}


@pytest.mark.parametrize("lost", ["latest.json", "manifest.json"])
def test_item3_lost_response_to_a_conditional_write_that_landed_is_success(tmp_path, lost):
    inner = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(FlakyStore(inner, lose_response_of=lost), "app")
    m = repo.commit(staged(tmp_path), new_id(), sample_info())
    assert CheckpointRepository(inner, "app").latest_id() == m.id


def test_item3_garbled_quarantine_record_does_not_fail_a_commit(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app")
    old = repo.commit(staged(tmp_path), new_id(), sample_info())
    store.put_bytes(f"app/checkpoints/{old.id}/quarantine.json", b"{not json")
    new = repo.commit(staged(tmp_path), new_id(), sample_info())
    infos = {i.id: i for i in repo.list()}
    assert infos[new.id].latest
    assert infos[old.id].status == "quarantined" and "unreadable" in infos[old.id].reason


# 4. A good checkpoint survives a bad node; quarantine is for the checkpoint's own faults

def _recovery(tmp_path, migrator, n=1, **settings):
    from crikpy import recovery
    from crikpy.settings import Settings

    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app", keep=5)
    ids = [repo.commit(staged(tmp_path), new_id(), sample_info()).id for _ in range(n)]
    s = Settings(name="app", store=store.url, work_dir=tmp_path / "work", pid_floor=0,
                 **settings)
    return (lambda: recovery.restore_latest(s, CheckpointRepository(store, "app", keep=5),
                                            migrator)), repo, ids


def test_item4_node_fault_keeps_the_checkpoint_and_exits_with_its_code(tmp_path):
    migrator = FakeMigrator(NodeFault("neither CAP_SYS_ADMIN nor CAP_CHECKPOINT_RESTORE"))
    start, repo, [ckpt] = _recovery(tmp_path, migrator)
    with pytest.raises(NodeFault) as e:
        start()
    assert e.value.exit_code == 178
    assert repo.latest_id() == ckpt
    assert [i.status for i in repo.list()] == ["committed"]


def test_item4_repeated_restore_failures_quarantine_after_k_then_fall_back(tmp_path):
    failure = errors.CriuError("criu restore failed: something in the images")
    migrator = FakeMigrator(failure, failure, failure, 4242)
    start, repo, [older, newest] = _recovery(tmp_path, migrator, n=2)
    for attempt in (1, 2):
        with pytest.raises(errors.CriuError):  # exit, keep the checkpoint, try again on restart
            start()
        assert repo.latest_id() == newest
        assert repo.attempts(newest)["failures"] == attempt
    pid = start().pid  # the third failure quarantines it; the previous generation restores
    assert pid == 4242
    assert migrator.restored == [newest, newest, newest, older]
    statuses = {i.id: i.status for i in repo.list()}
    assert statuses == {older: "committed", newest: "quarantined"}
    assert repo.latest_id() == older


def test_item4_corrupt_checkpoint_is_quarantined_at_once(tmp_path):
    migrator = FakeMigrator(CorruptCheckpoint("file images/pages-1.img does not match"))
    start, repo, [ckpt] = _recovery(tmp_path, migrator)
    assert start() == recovery.Cold()  # cold start
    assert [i.status for i in repo.list()] == ["quarantined"]


def test_item4_checkpoint_of_a_newer_crikpy_is_kept(tmp_path):
    ckpt = _seed_checkpoint(tmp_path, format="crikpy.checkpoint/v2")
    run = Run(tmp_path, "true")
    code, _ = run.finish()
    assert code == 179, run.stderr
    assert "newer crikpy" in run.stderr
    repo = CheckpointRepository(open_store(f"file://{tmp_path / 'store'}"), "app")
    assert repo.latest_id() == ckpt
    assert all(i.status != "quarantined" for i in repo.list())


def test_item4_release_makes_a_quarantined_checkpoint_restorable_again(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app")
    m = repo.commit(staged(tmp_path), new_id(), sample_info())
    repo.quarantine(m.id, "criu restore failed: errno 56")
    assert repo.latest_id() is None
    out = crikpy("checkpoints", "release", m.id, "--store", store.url, "--name", "app")
    assert out.returncode == 0, out.stderr
    fresh = CheckpointRepository(store, "app")
    assert [i.status for i in fresh.list()] == ["committed"]
    assert fresh.latest_id() == m.id


def test_item4_quarantined_checkpoints_fall_under_retention(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app", keep=2)
    bad = [repo.commit(staged(tmp_path), new_id(), sample_info()).id for _ in range(4)]
    for ckpt in bad:
        repo.quarantine(ckpt, "bad")
    newest = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    repo.housekeeping(newest, deadline_mod.Deadline.after(10))
    quarantined = [i.id for i in repo.list() if i.status == "quarantined"]
    assert quarantined == bad[-2:]


# 5. Never a restart loop

@pytest.mark.parametrize("changes", [
    {"additional_paths": [5]},
    {"additional_paths": ["relative"]},
    {"additional_paths": ["/a/../etc"]},
    {"stdio": {"7": "pipe:[1]"}},
    {"stdio": {"one": "pipe:[1]"}},
    {"stdio": {"1": 5}},
    {"command": ["ok", 5]},
    {"command": []},
    {"root_pid": -1},
    {"files": [{"path": "images/a", "size": 1, "sha256": "0" * 64},
               {"path": "images/a/b", "size": 1, "sha256": "0" * 64}]},
    {"files": [{"path": "images/" + "x" * 300, "size": 1, "sha256": "0" * 64}]},
    {"files": [{"path": "images/a", "size": True, "sha256": "0" * 64}]},
])
def test_item5_hostile_manifest_fields_are_corrupt_not_a_crash(changes):
    with pytest.raises(CorruptCheckpoint):
        Manifest.from_json(_manifest_json(**changes), where="under test")


@pytest.mark.parametrize("changes", [{"additional_paths": [5]}, {"stdio": {"one": "x"}}])
def test_item5_hostile_manifest_quarantines_and_starts_cold(tmp_path, changes):
    ckpt = _seed_checkpoint(tmp_path, **changes)
    run = Run(tmp_path, "sh", "-c", "echo cold")
    code, out = run.finish()
    assert (code, out.strip()) == (0, "cold"), run.stderr
    assert "Traceback" not in run.stderr
    repo = CheckpointRepository(open_store(f"file://{tmp_path / 'store'}"), "app")
    assert {i.id: i.status for i in repo.list()} == {ckpt: "quarantined"}


def test_item5_unknown_optional_manifest_fields_are_tolerated():
    m = Manifest.from_json(_manifest_json(written_by_a_later_v1="yes"), where="under test")
    assert m.command == ["app"]


def test_item5_garbled_pointer_with_fail_policy_fails_once_then_starts_cold(tmp_path):
    (tmp_path / "store" / "app").mkdir(parents=True)
    (tmp_path / "store" / "app" / "latest.json").write_text("{garbled")
    first = Run(tmp_path, "sh", "-c", "echo cold", extra=["--on-restore-failure", "fail"])
    code, _ = first.finish()
    assert code == 176 and "quarantined" not in first.stderr, first.stderr
    second = Run(tmp_path, "sh", "-c", "echo cold", extra=["--on-restore-failure", "fail"])
    code, out = second.finish()
    assert (code, out.strip()) == (0, "cold"), second.stderr


def test_item5_garbled_quarantine_record_does_not_crash_list(tmp_path):
    ckpt = _seed_checkpoint(tmp_path)
    (tmp_path / "store" / "app" / "checkpoints" / ckpt / "quarantine.json").write_text("[1,")
    out = crikpy("checkpoints", "list", "--store", f"file://{tmp_path / 'store'}",
                 "--name", "app", "--json")
    assert out.returncode == 0, out.stderr
    [info] = json.loads(out.stdout)
    assert info["status"] == "quarantined"


# 6. Every step is bounded by the deadline, counted from the SIGTERM's arrival

@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_item6_infinite_or_nan_grace_period_is_refused(value):
    out = crikpy("run", "--name", "x", "--grace-period", value, "--", "true")
    assert out.returncode == 172 and "grace-period" in out.stderr


def test_item6_file_store_copy_is_checked_per_chunk(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (8 * 1024 * 1024))
    store = open_store(f"file://{tmp_path / 'store'}")
    slow = lambda n: time.sleep(0.1)  # noqa: E731 - a slow disk, one chunk at a time
    started = time.monotonic()
    with pytest.raises(deadline_mod.DeadlineExceeded):
        store.put_file("app/big", str(big), progress=slow, deadline=deadline_mod.Deadline.after(0.3))
    assert time.monotonic() - started < 0.7


def test_item6_a_held_store_lock_does_not_outlive_the_deadline(tmp_path):
    import fcntl

    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes("app/latest.json", b"{}")
    fd = os.open(tmp_path / "store" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another pod holds the lock and hangs
    try:
        with pytest.raises(deadline_mod.DeadlineExceeded):
            store.put_bytes("app/latest.json", b"{}", if_absent=True,
                            deadline=deadline_mod.Deadline.after(0.3))
    finally:
        os.close(fd)


def test_item6_deadline_counts_from_a_pending_sigterms_arrival():
    code = (
        "import os, signal, time\n"
        "from crikpy import deadline\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "d = deadline.Deadline.for_grace_period(100.0)\n"  # a periodic checkpoint's own
        "first = deadline.sigterm_arrived_at()\n"
        "time.sleep(1.0)\n"  # crikpy busy; the SIGTERM waits
        "final = deadline.Deadline.for_grace_period(10.0, started=deadline.sigterm_arrived_at())\n"
        "print(first is not None, round(final.remaining(), 1))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    seen, remaining = out.stdout.split()
    assert seen == "True", out.stderr
    assert float(remaining) <= 8.1  # 10 s grace, 1 s reserve, 1 s already gone


def test_item6_a_sigterms_arrival_outlives_the_lean_re_exec(tmp_path):
    # crikpy restores (or starts) with the S3 libraries loaded, then re-executes itself without
    # them. A SIGTERM seen pending before that exec stays pending across it; its arrival time
    # must too, or the final checkpoint counts its deadline from after the exec.
    code = (
        "import os, signal, subprocess, sys, time\n"
        "from crikpy import app, deadline\n"
        "child = subprocess.Popen(['sleep', '100'])\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "assert deadline.sigterm_arrived_at() is not None\n"  # seen during the restore
        "time.sleep(2.0)\n"  # the rest of the restore
        f"sys.argv = ['crikpy', 'run', '--store', 'file://{tmp_path}/store', '--name', 'app', "
        f"'--work-dir', '{tmp_path}/work', '--grace-period', '10', '--', 'sleep', '100']\n"
        "app._reexec_lean(app.Handover(pid=child.pid, command=['sleep', '100'], "
        "sigterm_at=deadline.sigterm_arrived_at(), owner='pod/1', pointer=None, "
        "criu_version='unknown'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    [started] = [json.loads(x) for x in out.stderr.splitlines() if "checkpoint.started" in x]
    # 10 s grace less its reserve, and 2 s already gone before the exec
    assert started["seconds_left"] <= 10 - deadline_mod.reserve(10) - 2 + 0.2, out.stderr
    assert out.returncode == 143, out.stderr  # the checkpoint fails here; the workload stops


def test_item6_a_sigterm_during_a_periodic_checkpoint_interrupts_it():
    code = (
        "import os, signal\n"
        "from crikpy import deadline, errors\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "d = deadline.Deadline.for_grace_period(100.0, on_sigterm=deadline.ABORT)\n"
        "d.check('a step')\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "try:\n"
        "    d.check('the next step')\n"
        "except errors.Interrupted:\n"
        "    print('interrupted')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "interrupted", out.stderr


# 7. Additional paths round-trip

def test_item7_additional_paths_round_trip_dirs_symlinks_modes_owners_mtimes(tmp_path):
    from crikpy.checkpoint import extras

    src = tmp_path / "src" / "data"
    (src / "empty").mkdir(parents=True)
    (src / "sub").mkdir()
    (src / "sub" / "file").write_text("content")
    os.chmod(src / "sub" / "file", 0o640)
    os.chown(src / "sub" / "file", 1234, 5678)
    os.chmod(src / "sub", 0o711)
    (src / "abs-link").symlink_to("/etc/hostname")
    (src / "rel-link").symlink_to("sub/file")
    os.utime(src / "sub" / "file", (1_000_000_000, 1_000_000_000))
    os.utime(src / "sub", (1_100_000_000, 1_100_000_000))
    archive = tmp_path / "extra.tar"
    extras.pack([str(src)], archive)

    import shutil
    shutil.rmtree(src)
    put = extras.put_back(archive, [str(src)], authenticated=False)
    put.keep()
    assert (src / "empty").is_dir()
    st = os.stat(src / "sub" / "file")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_mtime == 1_000_000_000
    assert stat.S_IMODE(os.stat(src / "sub").st_mode) == 0o711
    assert os.stat(src / "sub").st_mtime == 1_100_000_000
    assert os.readlink(src / "abs-link") == "/etc/hostname"
    assert os.readlink(src / "rel-link") == "sub/file"


def test_item7_failed_restore_undoes_the_put_back_files(tmp_path):
    from crikpy.checkpoint import extras

    data = tmp_path / "data"
    data.mkdir()
    (data / "journal").write_text("checkpoint's\n")
    archive = tmp_path / "extra.tar"
    extras.pack([str(data)], archive)
    (data / "journal").write_text("this pod's own\n")
    (data / "new").write_text("only here\n")
    put = extras.put_back(archive, [str(data)], authenticated=False)
    assert (data / "journal").read_text() == "checkpoint's\n"
    assert not (data / "new").exists()
    put.undo()
    assert (data / "journal").read_text() == "this pod's own\n"
    assert (data / "new").read_text() == "only here\n"
    assert sorted(os.listdir(tmp_path)) == ["data", "extra.tar", "unpack"] or \
        sorted(os.listdir(tmp_path)) == ["data", "extra.tar"]


def test_item7_only_configured_paths_are_put_back(tmp_path):
    from crikpy.checkpoint import extras

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    archive = tmp_path / "extra.tar"
    extras.pack([str(a), str(b)], archive)
    a.unlink()
    b.unlink()
    extras.put_back(archive, [str(a)], authenticated=False).keep()
    assert a.read_text() == "a" and not b.exists()


def test_item7_fifo_or_socket_additional_path_is_refused_at_start(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run = Run(tmp_path, "true", extra=["--additional-path", str(fifo)])
    code, _ = run.finish()
    assert code == 172, run.stderr
    assert "fifo" in run.stderr.lower() and str(fifo) in run.stderr


def test_item7_an_additional_path_that_is_a_symlink_is_warned_of_at_start(tmp_path):
    # A link is saved as a link (never dereferenced), so the data behind it is not in the
    # checkpoint: the user is told at start, not after the first restore.
    (tmp_path / "volume").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "volume")
    run = Run(tmp_path, "true", extra=["--additional-path", str(tmp_path / "data")])
    code, _ = run.finish()
    assert code == 0, run.stderr
    [line] = [json.loads(x) for x in run.stderr.splitlines()
              if "additional_path.is_symlink" in x]
    assert line["path"] == str(tmp_path / "data") and line["target"] == str(tmp_path / "volume")


def test_item7_inotify_paths_survive_a_periodic_checkpoint(tmp_path):
    watched = tmp_path / "watched"
    watched.write_text("keep me")
    config = tmp_path / "c.yaml"
    config.write_text(f"inotifyIncompatiblePaths: [{watched}]\n")
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
              extra=["--config", str(config), "--checkpoint-interval", "1s"])
    assert run.readline().startswith("ready")
    time.sleep(2.5)  # at least one periodic checkpoint (it fails here: no CRIU)
    run.proc.send_signal(signal.SIGINT)
    run.finish()
    assert [e for e in run.event("checkpoint.started") if e["reason"] == "periodic"]
    assert watched.exists(), "a periodic checkpoint deleted an inotify-incompatible path"


# 8. A tty never yields a checkpoint that cannot be restored

def test_item8_workload_on_a_tty_gets_its_sigterm_and_the_refusal_says_why(tmp_path):
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crikpy", "run", "--store", f"file://{tmp_path / 'store'}",
         "--name", "app", "--work-dir", str(tmp_path / "work"), "--pid-floor", "0", "--",
         sys.executable, "-c", WORKLOAD],
        stdin=terminal, stdout=terminal, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")},
        start_new_session=True)
    os.close(terminal)
    buf = b""
    while b"ready" not in buf:
        buf += os.read(controller, 1024)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    os.close(controller)
    events = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    [failed] = [e for e in events if e["event"] == "checkpoint.failed"]
    assert "terminal" in failed["error"] and "tty" in failed["error"]
    assert proc.returncode == 0  # the workload's own exit after its SIGTERM


# 9. Leftovers are cleaned up

def test_item9_temp_files_of_a_killed_writer_are_swept_at_the_next_commit(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app", stale_after=0.5)
    leftover = tmp_path / "store" / "app" / "checkpoints" / new_id() / "files" / "pages.img.tmp-dead"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"x" * 1000)
    old = time.time() - 60
    os.utime(leftover, (old, old))
    newest = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    repo.housekeeping(newest, deadline_mod.Deadline.after(10))
    assert not leftover.exists()


def test_item9_a_racing_writers_incomplete_checkpoint_is_not_pruned_while_fresh(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app", stale_after=3600)
    loser = new_id()
    store.put_bytes(f"app/checkpoints/{loser}/files/images/pages-1.img", b"uploading")
    repo.commit(staged(tmp_path), new_id(), sample_info())
    assert loser in {i.id for i in repo.list()}


def test_item9_a_manifest_is_never_written_when_a_file_is_missing(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")

    class Vanishing:  # retention of a racing pod deletes a file right after it was written
        def __getattr__(self, name):
            return getattr(store, name)

        def put_file(self, key, path, **kw):
            digest = store.put_file(key, path, **kw)
            if key.endswith("dump.log"):
                store.delete(key)
            return digest

    repo = CheckpointRepository(Vanishing(), "app")
    ckpt = new_id()
    with pytest.raises(errors.StoreError, match="missing"):
        repo.commit(staged(tmp_path), ckpt, sample_info())
    assert store.get_bytes(f"app/checkpoints/{ckpt}/manifest.json") is None


# 10. A committed notice checkpoint does not wait forever

def test_item10_wait_after_a_notice_checkpoint_ends_after_its_timeout():
    code = (
        "import subprocess, time\n"
        "from crikpy import supervisor\n"
        "supervisor.block_signals()\n"
        "pid = supervisor.spawn(['sleep', '60'])\n"
        "started = time.monotonic()\n"
        "out = supervisor.supervise(pid, None, lambda pid: True, notice_wait=1.0)\n"
        "print(out.how.value, round(time.monotonic() - started))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    how, seconds = out.stdout.splitlines()[-1].split()  # after the log lines (no log set-up)
    assert how == "checkpointed" and 1 <= int(seconds) <= 3, out.stdout + out.stderr


# 11. Exit codes are crikpy's own

def test_item11_exit_codes_are_out_of_the_workloads_range_and_one_per_fault():
    # docs/settings.md's table is generated from errors.FAULTS (tests/unit/test_docs.py).
    codes = [code for code, _ in errors.FAULTS.values()]
    assert len(set(codes)) == len(codes) == len(errors.Fault)
    for fault, (code, _) in errors.FAULTS.items():  # a SIGTERM's own code is the one exception
        assert 170 <= code < 190 or (fault is errors.Fault.INTERRUPTED and code == 128 + 15)


def test_item11_bad_flag_is_crikpys_usage_code():
    out = crikpy("run", "--no-such-flag")
    assert out.returncode == errors.USAGE_EXIT_CODE == 171


# 12. A failed checkpoint followed by a clean shutdown: needs a committed checkpoint, so CRIU;
# see tests/e2e/test_failure_paths.py.


@pytest.mark.parametrize("started", ["cold", "restored"])
def test_item3_and_12_a_race_loser_never_clears_the_winners_pointer(tmp_path, started):
    """Two pods of one name checkpoint at once; B commits, A loses the race, its workload
    shuts down, and A makes the next start cold by default: but not over B's checkpoint."""
    from crikpy.checkpoint.pointer import Cleared
    from crikpy.errors import RaceLost

    store = open_store(f"file://{tmp_path / 'store'}")
    if started == "restored":
        CheckpointRepository(store, "app").commit(staged(tmp_path), new_id(), sample_info())
    a, b = CheckpointRepository(store, "app"), CheckpointRepository(store, "app")
    assert a.latest_id() == b.latest_id()  # both pods start from the same pointer
    winner = b.commit(staged(tmp_path), new_id(), sample_info())
    with pytest.raises(RaceLost):
        a.commit(staged(tmp_path), new_id(), sample_info())
    assert a.clear_latest("checkpoint failed, then the workload shut down") is Cleared.NOT_OURS
    assert CheckpointRepository(store, "app").latest_id() == winner.id
    # The winner's own clear (its workload then exits) still works.
    assert b.clear_latest("workload exited") is Cleared.CLEARED
    assert CheckpointRepository(store, "app").latest_id() is None


def test_item12_the_setting_is_validated():
    out = crikpy("run", "--name", "x", "--after-failed-checkpoint", "forget", "--", "true")
    assert out.returncode == 171 and "after-failed-checkpoint" in out.stderr


def _hostile_archive(path: Path, members: list[tuple[str, str, bytes | str]]) -> None:
    """A tar written by hand: (kind, name, data or link target) per member."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)


@pytest.mark.parametrize("members", [
    # a symlink, then a file of the same name written through it
    [("symlink", "{data}/x", "{outside}/victim"), ("file", "{data}/x", b"pwned")],
    # a hard link whose target climbs out, then a file written over the link
    [("hardlink", "{data}/x", "{data}/../outside/victim"), ("file", "{data}/x", b"pwned")],
    # a hard link through one of the archive's own symlinks
    [("symlink", "{data}/d", "{outside}"), ("hardlink", "{data}/x", "{data}/d/victim"),
     ("file", "{data}/x", b"pwned")],
])
def test_item7_a_hostile_archive_writes_nothing_outside_the_configured_paths(tmp_path, members):
    from crikpy.checkpoint import extras

    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("intact")
    fill = dict(data=str(data).lstrip("/"), outside=str(outside))
    archive = tmp_path / "extra.tar"
    _hostile_archive(archive, [(k, n.format(**fill), d.format(**fill) if isinstance(d, str) else d)
                               for k, n, d in members])
    try:
        extras.put_back(archive, [str(data)], authenticated=False).keep()
    except CorruptCheckpoint:
        pass
    assert (outside / "victim").read_text() == "intact"


def test_item5_a_pointer_naming_a_bad_id_is_cleared(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes("app/latest.json", json.dumps({"id": "../../etc"}).encode())
    run = Run(tmp_path, "sh", "-c", "echo cold")
    code, out = run.finish()
    assert (code, out.strip()) == (0, "cold"), run.stderr
    assert json.loads(store.get_bytes("app/latest.json").data)["id"] is None


def test_item5_a_pointer_naming_a_missing_checkpoint_falls_back_without_quarantine(tmp_path):
    from crikpy import recovery
    from crikpy.settings import Settings

    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app")
    older = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    ghost = new_id()
    repo.point_at(ghost, reason="test")
    s = Settings(name="app", store=store.url, work_dir=tmp_path / "work", pid_floor=0)
    assert recovery.restore_latest(s, repo, FakeMigrator(77)).pid == 77
    assert {i.id: i.status for i in repo.list()} == {older: "committed"}


def test_item4_a_quarantined_checkpoint_is_never_restored_even_if_still_latest(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app")
    ckpt = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    # quarantine.json landed, but clearing the pointer did not (the store failed in between)
    store.put_bytes(f"app/checkpoints/{ckpt}/quarantine.json", b'{"reason": "bad"}')
    migrator = FakeMigrator(55)
    from crikpy import recovery
    from crikpy.settings import Settings

    s = Settings(name="app", store=store.url, work_dir=tmp_path / "work", pid_floor=0)
    assert recovery.restore_latest(s, CheckpointRepository(store, "app"), migrator) == recovery.Cold()
    assert migrator.restored == []


@pytest.mark.parametrize("text", ["20261122T142301.123Z-1a2b3c4d\n",
                                  "２０261122T142301.123Z-1a2b3c4d"])
def test_item5_checkpoint_ids_are_strictly_ascii_and_whole(text):
    from crikpy.checkpoint.manifest import is_id

    assert not is_id(text)


def test_item4_only_vN_formats_count_as_newer():
    with pytest.raises(CorruptCheckpoint):
        Manifest.from_json(_manifest_json(format="crikpy.checkpoint/x"), where="under test")
    with pytest.raises(errors.NewerCheckpoint):
        Manifest.from_json(_manifest_json(format="crikpy.checkpoint/v2"), where="under test")
