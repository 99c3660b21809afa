"""Output for people: the `checkpoints list` table, and a `restore.skipped` that always says why."""

from __future__ import annotations

import ast
import datetime
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crikpy import cli, recovery
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.retention import CheckpointInfo
from crikpy.checkpoint.manifest import new_id
from crikpy.errors import CriuError
from crikpy.settings import Settings
from crikpy.stores import open_store
from tests.helpers import FakeMigrator, crikpy, sample_info, staged

NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _ago(**delta) -> str:
    return new_id(NOW - datetime.timedelta(**delta))


def test_checkpoints_table_shows_id_status_age_size_latest_reason():
    old, new, half, odd = (_ago(days=2, hours=3, minutes=20), _ago(minutes=5, seconds=12),
                           _ago(seconds=42), "not-a-checkpoint-id")
    infos = [
        CheckpointInfo(old, "quarantined", False, "2026-11-22T08:40:00+00:00", 3 * 2**29,
                       "CRIU failed:\n  Error (criu/files-reg.c:2034): no such file"),
        CheckpointInfo(new, "committed", True, "2026-11-24T11:54:48+00:00", 256 * 2**20),
        CheckpointInfo(half, "incomplete", False),
        CheckpointInfo(odd, "incomplete", False),
    ]
    assert cli.checkpoints_table(infos, now=NOW) == [
        f"{'ID':29}  STATUS       AGE    SIZE     LATEST  REASON",
        f"{old}  quarantined  2d3h   1.5 GiB  no      "
        "CRIU failed: Error (criu/files-reg.c:2034): no such file",
        f"{new}  committed    5m12s  256 MiB  yes     -",
        f"{half}  incomplete   42s    -        no      -",
        f"{odd:29}  incomplete   -      -        no      -",
    ]


@pytest.mark.parametrize("seconds, shown", [
    (0, "0s"), (59, "59s"), (60, "1m"), (61, "1m1s"), (3599, "59m59s"), (3600, "1h"),
    (3 * 3600 + 5 * 60 + 9, "3h5m"), (86400, "1d"), (86400 * 40 + 7200, "40d2h"),
    (-30, "0s"),  # a clock behind the writer's: not "-30s"
])
def test_ages_read_like_kubectls(seconds, shown):
    assert cli.human_age(seconds) == shown


@pytest.mark.parametrize("size, shown", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (256 * 2**20, "256 MiB"), (3 * 2**29, "1.5 GiB"), (5 * 2**40, "5 TiB"),
])
def test_sizes_are_binary_units(size, shown):
    assert cli.human_size(size) == shown


def _seed(tmp_path) -> tuple[list[str], int, list[str]]:
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "prod/app", keep=5)
    bad = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    repo.quarantine(bad, "restore failed 3 times")
    good = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    where = ["--store", f"file://{tmp_path / 'store'}", "--name", "app", "--namespace", "prod"]
    return [bad, good], repo.manifest(good).total_bytes, where


def test_checkpoints_list_prints_the_table_by_default(tmp_path):
    (bad, good), size, where = _seed(tmp_path)
    out = crikpy("checkpoints", "list", *where)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "AGE", "SIZE", "LATEST", "REASON"]
    assert [r.split()[0:2] for r in rows] == [[bad, "quarantined"], [good, "committed"]]
    assert rows[0].endswith("  no      restore failed 3 times")
    assert f"  {cli.human_size(size)}  yes     -" in rows[1]


def test_checkpoints_list_json_keeps_the_machine_format(tmp_path):
    (bad, good), size, where = _seed(tmp_path)
    out = crikpy("checkpoints", "list", "--json", *where)
    listing = json.loads(out.stdout)
    assert [sorted(i) for i in listing] == [
        ["created_at", "id", "latest", "reason", "status", "total_bytes"]] * 2
    assert [(i["id"], i["status"], i["latest"], i["reason"]) for i in listing] == [
        (bad, "quarantined", False, "restore failed 3 times"), (good, "committed", True, None)]
    assert listing[1]["total_bytes"] == size


# restore.skipped: every way a start ends up cold says why

def _start(tmp_path, store, migrator=None):
    s = Settings(name="app", store=store.url, work_dir=tmp_path / "work", pid_floor=0)
    with capture_logs() as logs:
        assert recovery.restore_latest(s, CheckpointRepository(store, "app"),
                                       migrator or FakeMigrator()) == recovery.Cold()
    return [e for e in logs if e["event"] == "restore.skipped"]


def test_skipped_because_nothing_was_ever_committed_says_so(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    [skipped] = _start(tmp_path, store)
    assert "names no checkpoint" in skipped["reason"]


def test_skipped_because_the_pointer_is_garbled_says_so(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes("app/latest.json", json.dumps({"id": "../../etc"}).encode())
    [skipped] = _start(tmp_path, store)
    assert "../../etc" in skipped["reason"] and "cleared" in skipped["reason"]


def test_skipped_because_the_checkpoint_is_quarantined_names_it(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    ckpt = CheckpointRepository(store, "app").commit(staged(tmp_path), new_id(), sample_info()).id
    store.put_bytes(f"app/checkpoints/{ckpt}/quarantine.json", b'{"reason": "bad"}')
    [skipped] = _start(tmp_path, store)
    assert ckpt in skipped["reason"] and "quarantined" in skipped["reason"]


def test_skipped_because_restores_kept_failing_names_the_checkpoint(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    ckpt = CheckpointRepository(store, "app").commit(staged(tmp_path), new_id(), sample_info()).id
    for _ in range(2):  # attempts 1 and 2 fail and exit; the third quarantines and goes cold
        with pytest.raises(CriuError):
            _start(tmp_path, store, FakeMigrator(RuntimeError("CRIU said no")))
    [skipped] = _start(tmp_path, store, FakeMigrator(RuntimeError("CRIU said no")))
    assert ckpt in skipped["reason"] and "failed to restore 3 times" in skipped["reason"]


def test_every_restore_skipped_in_the_code_carries_a_reason():
    """Guards code paths added later: a `restore.skipped` logged anywhere must pass `reason=`."""
    package = Path(cli.__file__).parent
    calls = []
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if (isinstance(node, ast.Call) and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "restore.skipped"):
                calls.append((f"{source.name}:{node.lineno}",
                              {k.arg: k.value for k in node.keywords}))
    assert len(calls) >= 2, "restore.skipped moved: update this test"
    for where, keywords in calls:
        reason = keywords.get("reason")
        assert reason is not None, f"{where}: restore.skipped without a reason"
        assert not (isinstance(reason, ast.Constant) and not reason.value), f"{where}: empty"


# Logs: readable on a terminal, one JSON object a line for log collectors

def _run_logs(tmp_path, stderr_on_terminal: bool) -> str:
    args = [sys.executable, "-m", "crikpy", "run", "--store", f"file://{tmp_path / 'store'}",
            "--name", "app", "--work-dir", str(tmp_path / "work"), "--pid-floor", "0", "--", "true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}
    if not stderr_on_terminal:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60).stderr
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=terminal, env=env)
    os.close(terminal)
    text = b""
    while chunk := _read(controller):
        text += chunk
    proc.wait(timeout=60)
    os.close(controller)
    return text.decode()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end closed
        return b""


def test_logs_are_readable_on_a_terminal_and_json_otherwise(tmp_path):
    on_terminal = _run_logs(tmp_path, stderr_on_terminal=True)
    skipped = [ln for ln in on_terminal.splitlines() if "restore.skipped" in ln]
    assert len(skipped) == 1 and not skipped[0].lstrip().startswith("{")
    assert "[info     ] restore.skipped" in skipped[0] and "reason='the latest pointer" in skipped[0]

    piped = [json.loads(ln) for ln in _run_logs(tmp_path, stderr_on_terminal=False).splitlines()]
    [reason] = [e["reason"] for e in piped if e["event"] == "restore.skipped"]
    assert f"reason='{reason}'" in skipped[0]
