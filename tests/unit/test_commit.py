"""The commit protocol over a real file store: atomic commit, pointer, quarantine, retention."""

import json
from pathlib import Path

import pytest

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.errors import RaceLost
from crikpy.checkpoint.manifest import new_id
from crikpy.deadline import Deadline
from crikpy.errors import CheckpointNotFound, CorruptCheckpoint
from crikpy.stores import open_store
from tests.helpers import sample_info, staged

@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def commit(repo, tmp_path, content=b"pages" * 1000):
    """Commit a checkpoint, and tidy up after it, as a pod does once nothing waits for it."""
    manifest = repo.commit(staged(tmp_path, content), new_id(), sample_info())
    repo.housekeeping(manifest.id, Deadline.after(10))
    return manifest


def test_committed_checkpoint_is_latest_and_fetches_verified(store, tmp_path):
    repo = CheckpointRepository(store, "ns/app")
    assert repo.latest() is None
    m = commit(repo, tmp_path, b"x" * 3_000_000)
    fresh = CheckpointRepository(store, "ns/app")
    assert fresh.latest() == m
    dest = tmp_path / "restore"
    fresh.fetch(m, dest)
    assert (dest / "images" / "pages-1.img").read_bytes() == b"x" * 3_000_000
    assert (dest / "extra" / "data" / "journal").read_text() == "tick 1\n"
    assert {f.path for f in m.files} == {"images/pages-1.img", "images/dump.log",
                                         "extra/data/journal"}


def test_files_without_manifest_are_never_restored(store, tmp_path):
    repo = CheckpointRepository(store, "app")
    ckpt_id = new_id()
    store.put_file(f"app/checkpoints/{ckpt_id}/files/images/pages-1.img",
                   str(staged(tmp_path) / "images" / "pages-1.img"))
    assert repo.latest() is None
    assert [(i.id, i.status) for i in repo.list()] == [(ckpt_id, "incomplete")]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"!"), "does not match its manifest"),
    (lambda p: p.unlink(), "is missing"),
])
def test_damaged_file_is_caught_before_anyone_reads_it(store, tmp_path, damage, message):
    repo = CheckpointRepository(store, "app")
    m = commit(repo, tmp_path)
    damage(next(Path(store.root).rglob("pages-1.img")))
    with pytest.raises(CorruptCheckpoint, match=message):
        repo.fetch(m, tmp_path / "restore")


def test_quarantine_clears_pointer_and_shows_reason(store, tmp_path):
    repo = CheckpointRepository(store, "app")
    m = commit(repo, tmp_path)
    repo.quarantine(m.id, "criu restore failed: boom", criu_log=b"Error: boom")
    assert repo.latest() is None
    [info] = repo.list()
    assert (info.status, info.reason, info.latest) == ("quarantined", "criu restore failed: boom",
                                                       False)
    assert store.get_bytes(f"app/checkpoints/{m.id}/restore.log").data == b"Error: boom"


def test_retention_keeps_newest_n(store, tmp_path):
    repo = CheckpointRepository(store, "app", keep=2)
    ids = [commit(repo, tmp_path).id for _ in range(4)]
    infos = repo.list()
    assert [i.id for i in infos] == ids[2:]
    assert [i.latest for i in infos] == [False, True]
    assert not list(store.list(f"app/checkpoints/{ids[0]}/"))


def test_retention_removes_leftover_incomplete_checkpoints(store, tmp_path):
    repo = CheckpointRepository(store, "app", stale_after=0)
    leftover = new_id()
    store.put_bytes(f"app/checkpoints/{leftover}/files/images/x.img", b"half")
    commit(repo, tmp_path)
    assert leftover not in [i.id for i in repo.list()]


def test_second_writer_with_same_name_loses_race_and_keeps_its_checkpoint(store, tmp_path):
    pod_a = CheckpointRepository(store, "app")
    pod_b = CheckpointRepository(store, "app")
    assert pod_a.latest() is None and pod_b.latest() is None  # both started cold
    winner = commit(pod_b, tmp_path)
    with pytest.raises(RaceLost):
        commit(pod_a, tmp_path)
    assert CheckpointRepository(store, "app").latest().id == winner.id
    statuses = {i.id: i.status for i in pod_a.list()}
    assert list(statuses.values()) == ["committed", "committed"]


def test_clear_latest_makes_next_start_cold_but_keeps_checkpoint(store, tmp_path):
    repo = CheckpointRepository(store, "app")
    m = commit(repo, tmp_path)
    repo.clear_latest(reason="workload exited with code 0")
    assert repo.latest() is None
    assert [i.id for i in repo.list()] == [m.id]
    pointer = json.loads(store.get_bytes("app/latest.json").data)
    assert pointer["id"] is None and "exited" in pointer["reason"]


def test_delete(store, tmp_path):
    repo = CheckpointRepository(store, "app")
    m = commit(repo, tmp_path)
    repo.delete(m.id)
    assert repo.list() == [] and repo.latest() is None
    with pytest.raises(CheckpointNotFound):
        repo.delete(m.id)


def test_garbled_pointer_is_corrupt(store):
    store.put_bytes("app/latest.json", b"{oops")
    with pytest.raises(CorruptCheckpoint, match="garbled"):
        CheckpointRepository(store, "app").latest()


def test_pointer_to_manifestless_checkpoint_is_corrupt(store):
    ckpt_id = new_id()
    store.put_bytes(f"app/checkpoints/{ckpt_id}/files/x", b"1")
    store.put_bytes("app/latest.json", json.dumps({"id": ckpt_id}).encode())
    with pytest.raises(CorruptCheckpoint, match="never committed"):
        CheckpointRepository(store, "app").latest()
