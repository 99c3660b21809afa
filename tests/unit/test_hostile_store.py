"""What someone who can write the store (the volume or the bucket) can and cannot make crikpy do.

They can force a cold start or a rollback (docs/security.md, the threat model). They must not make crikpy, which
runs as root, write, read or delete outside the store, plant privileges in the pod, or write to
the operator's terminal.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from crikpy.checkpoint import extras
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.errors import StoreError
from crikpy.stores import open_store
from tests.helpers import sample_info, staged


@pytest.fixture
def pod_dir(tmp_path):
    """A directory of the pod's own filesystem, outside the store (think /etc)."""
    pod = tmp_path / "podfs" / "etc"
    pod.mkdir(parents=True)
    (pod / "passwd").write_text("root:x:0:0\n")
    return pod


def _untouched(pod):
    assert sorted(os.listdir(pod)) == ["passwd"], f"crikpy changed {pod}: {os.listdir(pod)}"
    assert (pod / "passwd").read_text() == "root:x:0:0\n"


def _committed(tmp_path):
    repo = CheckpointRepository(open_store(f"file://{tmp_path / 'store'}"), "ns/a")
    return repo, repo.commit(staged(tmp_path), new_id(), sample_info())


def test_a_symlinked_workload_dir_takes_no_checkpoint_out_of_the_store(tmp_path, pod_dir):
    (tmp_path / "store" / "ns").mkdir(parents=True)
    (tmp_path / "store" / "ns" / "a").symlink_to(pod_dir)
    with pytest.raises(StoreError, match="symbolic link"):
        _committed(tmp_path)
    _untouched(pod_dir)


def test_a_symlinked_checkpoint_dir_is_neither_read_written_nor_deleted_through(tmp_path, pod_dir):
    repo, m = _committed(tmp_path)
    ckpt = tmp_path / "store" / "ns" / "a" / "checkpoints" / m.id
    ckpt.rename(ckpt.with_name("moved"))
    ckpt.symlink_to(pod_dir)  # the pointer still names it
    (pod_dir / "manifest.json").write_text("the pod's own file of that name")
    (pod_dir / "attempts.json").write_text("the pod's own file of that name")
    for call in (lambda: repo.manifest(m.id), lambda: repo.record_attempt(m.id, 1, "x"),
                 lambda: repo.forget_attempts(m.id), lambda: repo.quarantine(m.id, "x")):
        with pytest.raises(StoreError, match="symbolic link"):
            call()
    (pod_dir / "manifest.json").unlink()
    (pod_dir / "attempts.json").unlink()
    _untouched(pod_dir)


def test_a_symlinked_object_is_not_read(tmp_path, pod_dir):
    repo, m = _committed(tmp_path)
    latest = tmp_path / "store" / "ns" / "a" / "latest.json"
    latest.unlink()
    latest.symlink_to(pod_dir / "passwd")
    with pytest.raises(StoreError, match="symbolic link"):
        repo.latest()


def test_sweep_and_list_do_not_follow_a_symlinked_dir(tmp_path, pod_dir):
    victim = pod_dir / "app.tmp-cache"
    victim.write_text("the pod's own file")
    old = time.time() - 10_000
    os.utime(victim, (old, old))
    (tmp_path / "store" / "ns").mkdir(parents=True)
    (tmp_path / "store" / "ns" / "a").symlink_to(pod_dir)
    store = open_store(f"file://{tmp_path / 'store'}")
    with pytest.raises(StoreError, match="symbolic link"):
        store.sweep("ns/a/", older_than=600)
    with pytest.raises(StoreError, match="symbolic link"):
        list(store.list("ns/a/"))
    assert victim.exists()


def _archive(path, root, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode, uid in members:
            info = tarfile.TarInfo(f"{root}/{name}" if name else root)
            info.mode, info.uid, info.gid = mode, uid, uid
            if name in ("", "tmp"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"x\n"))


@pytest.mark.parametrize("sealed", [False, True], ids=["no key", "key"])
def test_setuid_and_setgid_bits_come_back_only_from_an_authenticated_archive(tmp_path, sealed):
    data = tmp_path / "data"
    data.mkdir()
    archive = tmp_path / "extra.tar"
    _archive(archive, str(data).lstrip("/"), [("", 0o755, 0), ("shell", 0o6755, 0),
                                              ("tmp", 0o3777, 0), ("plain", 0o640, 4242)])
    extras.put_back(archive, [str(data)], authenticated=sealed).keep()
    modes = {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in data.iterdir()}
    if sealed:
        assert modes == {"shell": 0o6755, "tmp": 0o3777, "plain": 0o640}
    else:
        assert modes == {"shell": 0o755, "tmp": 0o1777, "plain": 0o640}
    assert os.lstat(data / "plain").st_uid == 4242  # owners round-trip either way


def test_checkpoints_list_shows_no_control_characters_from_the_store(tmp_path):
    _, m = _committed(tmp_path)
    evil = "\x1b[2K\x1b[1Aall good\x1b]52;c;cm0gLXJmIH4K\x07\x9b2J"
    (tmp_path / "store" / "ns" / "a" / "checkpoints" / m.id / "quarantine.json").write_text(
        json.dumps({"reason": evil}))
    out = subprocess.run([sys.executable, "-m", "crikpy", "checkpoints", "list", "--store",
                          f"file://{tmp_path / 'store'}", "--namespace", "ns", "--name", "a"],
                         capture_output=True, text=True, check=True).stdout
    assert not [c for c in out if (ord(c) < 32 and c != "\n") or 127 <= ord(c) < 160], repr(out)
    assert "all good" in out and "\\x1b" in out  # shown, escaped


def test_an_attempts_record_with_a_huge_count_is_capped_not_a_crash(tmp_path):
    """Python parses a 4300-digit integer, but cannot write its successor back."""
    import types  # noqa: PLC0415

    from crikpy import recovery  # noqa: PLC0415

    repo, m = _committed(tmp_path)
    (tmp_path / "store" / "ns" / "a" / "checkpoints" / m.id / "attempts.json").write_text(
        '{"failures": ' + "9" * 4300 + "}")

    class Restores:
        def restore(self, manifest, before_criu=lambda: None):
            before_criu()
            return 4242

    settings = types.SimpleNamespace(restore_attempts=3, on_restore_failure="cold-start")
    assert recovery.restore_latest(settings, repo, Restores()).pid == 4242
    assert repo.attempts(m.id)["failures"] == 0
