"""What crikpy commits, crikpy reads back: a setting or command it accepted at start never yields
a checkpoint that its own reader refuses (and quarantines) at the next start.

The manifest reader has limits (paths UTF-8, at most 4096 characters, at most 1024 of them; at
most 4096 command arguments). Each writer-side input that could break one is tried here: a
setting is refused at start, a command is recorded shortened, and anything else that would not
read back fails the checkpoint instead of committing it.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from crikpy import migrate, recovery
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import MAX_COMMAND_ARGS
from crikpy.deadline import Deadline
from crikpy.errors import ConfigError, CrikpyError
from crikpy.settings import Settings, resolve
from crikpy.stores import open_store
from crikpy.tasks import TaskGroup
from tests.helpers import FakeMigrator


def _checkpoint(tmp_path, monkeypatch, command, **settings):
    """A real Migrator's checkpoint of a live process, CRIU's dump replaced by a staged image."""
    def dump(self, ckpt_id, pid, staging, leave_running, deadline):
        (staging / "images").mkdir()
        (staging / "images" / "pages-1.img").write_bytes(b"pages")
        return migrate._Dumped(0.1, TaskGroup("upload"), [], 5)
    monkeypatch.setattr(migrate.Migrator, "_dump", dump)
    store = open_store(f"file://{tmp_path / 'store'}")
    s = Settings(name="app", store=store.url, work_dir=tmp_path / "work", pid_floor=0, **settings)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        return s, store, migrate.Migrator(s, CheckpointRepository(store, "app")).checkpoint(
            proc.pid, command, Deadline.after(20))
    finally:
        proc.kill()
        proc.wait()


def _restores(s, store) -> tuple[int | None, list[str]]:
    start = recovery.restore_latest(s, CheckpointRepository(store, "app"), FakeMigrator(4242))
    return (start.pid, start.command) if isinstance(start, recovery.Restored) else (None, [])


@pytest.mark.parametrize("paths, message", [
    ([os.fsdecode(b"/data-\xff")], "not valid UTF-8"),
    (["/" + "a/" * 2100 + "x"], "longer than 4096"),
    ([f"/p{i}" for i in range(1025)], "at most 1024"),
])
def test_additional_paths_a_checkpoint_cannot_record_are_refused_at_start(paths, message):
    with pytest.raises(ConfigError, match=f"additionalPaths.*{message}|{message}.*additionalPaths"):
        resolve({"additional_paths": paths}, None, {"HOSTNAME": "h"})


def test_a_command_longer_than_a_manifest_holds_is_recorded_shortened(tmp_path, monkeypatch):
    command = ["app", *[f"arg{i}" for i in range(MAX_COMMAND_ARGS + 10)]]
    s, store, manifest = _checkpoint(tmp_path, monkeypatch, command)
    pid, recorded = _restores(s, store)
    assert pid == 4242
    assert recorded[:100] == command[:100]
    assert len(recorded) == MAX_COMMAND_ARGS
    assert recorded[-1] == "<12 more arguments not recorded>"  # 4107 given, 4095 kept


def test_a_command_of_huge_arguments_is_recorded_shortened(tmp_path, monkeypatch):
    command = ["app", *["x" * 100_000] * 60]  # 6 MB: more than the manifest may hold
    s, store, _ = _checkpoint(tmp_path, monkeypatch, command)
    pid, recorded = _restores(s, store)
    assert pid == 4242
    assert recorded[0] == "app" and "more arguments" in recorded[-1]


def test_a_manifest_that_would_not_read_back_is_never_committed(tmp_path, monkeypatch):
    # Anything the reader refuses that no setting check caught: here a host name over its limit.
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 2000)
    with pytest.raises(CrikpyError, match="would not read back.*hostname"):
        _checkpoint(tmp_path, monkeypatch, ["app"])
    store = open_store(f"file://{tmp_path / 'store'}")
    assert CheckpointRepository(store, "app").latest_id() is None
