"""Sealed checkpoints: a checkpoint opens only under a configured key, for its own workload and id.

Real AES-256-GCM (cryptography) over a real file store; every tampering below must fail, and
every honest checkpoint must restore, including after a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import types

import pytest

from crikpy import recovery
from crikpy.checkpoint import keys, sealed
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.errors import ConfigError, CorruptCheckpoint
from crikpy.stores import open_store
from tests.helpers import sample_info

SECRET = b"the-workload-holds-this-secret-"


def ring(*raw: bytes) -> keys.KeyRing:
    return keys.KeyRing(tuple(raw))


K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))


def staged(tmp_path, pages: bytes):
    root = tmp_path / f"staging-{new_id()}"
    (root / "images").mkdir(parents=True)
    (root / "images" / "pages-1.img").write_bytes(pages)
    (root / "images" / "pstree.img").write_bytes(b"tree")
    return root


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def pages(size=3 * sealed.CHUNK + 5000) -> bytes:
    return (SECRET * (size // len(SECRET) + 1))[:size]


def commit(store, tmp_path, workload="ns/a", key_ring=None, data=None):
    repo = CheckpointRepository(store, workload, keys=key_ring or ring(K1))
    data = pages() if data is None else data
    return repo.commit(staged(tmp_path, data), new_id(), sample_info(name=workload))


def restore(store, tmp_path, workload="ns/a", key_ring=None):
    repo = CheckpointRepository(store, workload, keys=key_ring or ring(K1))
    manifest = repo.latest()
    dest = tmp_path / f"restore-{new_id()}"
    repo.fetch(manifest, dest)
    return (dest / "images" / "pages-1.img").read_bytes()


def test_sealed_checkpoint_round_trips_and_holds_no_plaintext(store, tmp_path):
    m = commit(store, tmp_path)
    assert m.encryption == {"cipher": "AES-256-GCM", "key_id": keys.key_id(K1).hex(),
                            "chunk_bytes": sealed.CHUNK}
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            assert SECRET[:16] not in body, f"{path} holds plaintext"
            assert b'"command"' not in body, f"{path} holds the manifest in the clear"
    assert restore(store, tmp_path) == pages()


@pytest.mark.parametrize("size", [0, 1, sealed.CHUNK - 1, sealed.CHUNK, sealed.CHUNK + 1,
                                  2 * sealed.CHUNK])
def test_chunk_boundaries(store, tmp_path, size):
    commit(store, tmp_path, data=pages(size) if size else b"")
    assert restore(store, tmp_path) == (pages(size) if size else b"")


def test_rotation_new_key_first_old_key_still_opens(store, tmp_path):
    commit(store, tmp_path, key_ring=ring(K1))
    assert restore(store, tmp_path, key_ring=ring(K2, K1)) == pages()
    m = commit(store, tmp_path, key_ring=ring(K2, K1))
    assert m.encryption["key_id"] == keys.key_id(K2).hex()
    assert restore(store, tmp_path, key_ring=ring(K2)) == pages()


@pytest.mark.parametrize("key_ring", [None, ring(K3)], ids=["no key", "wrong key"])
def test_no_key_or_wrong_key_is_a_config_error_naming_the_setting(store, tmp_path, key_ring):
    commit(store, tmp_path)
    repo = CheckpointRepository(store, "ns/a", keys=key_ring)
    with pytest.raises(ConfigError, match="--encryption-key-file"):
        repo.latest()


def _object(tmp_path, m, name):
    return tmp_path / "store" / "ns" / "a" / "checkpoints" / m.id / name


def _tamper_and_rewrite_sha(tmp_path, m, name, change):
    """What an attacker with write access does: change the object, fix up nothing else."""
    path = _object(tmp_path, m, name)
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("change", [
    lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # the header's key id
    lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:],  # the first chunk's ciphertext
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # the last tag
    lambda b: b[: sealed.HEADER_BYTES + sealed.CHUNK + sealed.TAG_BYTES],  # drop the tail
    lambda b: b[:-100],  # cut mid-chunk
    lambda b: (b[:sealed.HEADER_BYTES] + b[sealed.HEADER_BYTES + sealed.CHUNK + 16:
                                            sealed.HEADER_BYTES + 2 * (sealed.CHUNK + 16)]
               + b[sealed.HEADER_BYTES:sealed.HEADER_BYTES + sealed.CHUNK + 16]
               + b[sealed.HEADER_BYTES + 2 * (sealed.CHUNK + 16):]),  # swap chunks 0 and 1
    lambda b: b"",  # emptied
], ids=["header", "ciphertext", "tag", "dropped tail", "cut", "swapped chunks", "emptied"])
def test_any_change_to_a_file_fails_authentication(store, tmp_path, change):
    m = commit(store, tmp_path)
    _tamper_and_rewrite_sha(tmp_path, m, "files/images/pages-1.img", change)
    # Even with the manifest's sha256 made to agree, AEAD catches it: rewrite the manifest?
    # It is sealed, so the attacker cannot; the object's own tags must catch the change.
    with pytest.raises(CorruptCheckpoint, match="authentication failed|does not match"):
        restore(store, tmp_path)


def test_a_flipped_byte_in_the_manifest_fails_authentication(store, tmp_path):
    m = commit(store, tmp_path)
    _tamper_and_rewrite_sha(tmp_path, m, "manifest.json", lambda b: b[:-5] + b"xxxxx")
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        CheckpointRepository(store, "ns/a", keys=ring(K1)).latest()


def test_an_unsealed_checkpoint_is_refused_when_a_key_is_set(store, tmp_path):
    CheckpointRepository(store, "ns/a").commit(staged(tmp_path, pages()), new_id(), sample_info())
    with pytest.raises(CorruptCheckpoint, match="authentication failed.*not sealed"):
        CheckpointRepository(store, "ns/a", keys=ring(K1)).latest()


def test_a_checkpoint_of_workload_a_copied_under_b_is_refused(store, tmp_path):
    commit(store, tmp_path, workload="ns/a")
    shutil.copytree(tmp_path / "store" / "ns" / "a", tmp_path / "store" / "ns" / "b")
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        CheckpointRepository(store, "ns/b", keys=ring(K1)).latest()


def test_a_pointer_naming_another_ids_files_is_refused(store, tmp_path):
    first = commit(store, tmp_path)
    second = commit(store, tmp_path)
    base = tmp_path / "store" / "ns" / "a" / "checkpoints"
    # The attacker puts the first checkpoint's manifest and files under the second's id.
    shutil.rmtree(base / second.id)
    shutil.copytree(base / first.id, base / second.id)
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        CheckpointRepository(store, "ns/a", keys=ring(K1)).latest()


def test_files_swapped_between_two_checkpoints_are_refused(store, tmp_path):
    first = commit(store, tmp_path)
    second = commit(store, tmp_path)
    base = tmp_path / "store" / "ns" / "a" / "checkpoints"
    target = base / second.id / "files" / "images" / "pages-1.img"
    shutil.copyfile(base / first.id / "files" / "images" / "pages-1.img", target)
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        restore(store, tmp_path)


def test_key_file_format(tmp_path):
    good = tmp_path / "keys"
    good.write_text(f"# rotated 2026-11\n{base64.b64encode(K2).decode()}\n\n"
                    f"{base64.b64encode(K1).decode()}\n")
    loaded = keys.load(good)
    assert loaded.keys == (K2, K1) and loaded.sealing_id == keys.key_id(K2)
    assert base64.b64encode(K2).decode() not in repr(loaded)
    for text, message in [("", "holds no key"), ("not base64!\n", "line 1: not base64"),
                          (base64.b64encode(b"short").decode(), "must be 32 bytes")]:
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            keys.load(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        keys.load(tmp_path / "absent")
    windows = tmp_path / "notepad"  # a byte-order mark and CRLF, as Windows editors save
    windows.write_bytes(b"\xef\xbb\xbf" + base64.b64encode(K1) + b"\r\n")
    assert keys.load(windows).keys == (K1,)


def test_the_manifest_records_key_ids_never_keys(store, tmp_path):
    m = commit(store, tmp_path)
    text = json.dumps(json.loads(m.to_json()))
    for key in (K1,):
        assert base64.b64encode(key).decode() not in text and key.hex() not in text
    assert os.path.getsize(_object(tmp_path, m, "manifest.json")) > sealed.HEADER_BYTES


def test_file_store_objects_are_private(tmp_path):
    import stat

    store = open_store(f"file://{tmp_path / 'store'}")
    CheckpointRepository(store, "ns/a").commit(staged(tmp_path, b"x"), new_id(), sample_info())
    for path in (tmp_path / "store").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


def _reseal(tmp_path, m, name, opening, sealing, workload="ns/a"):
    """Open one object of checkpoint `m` under `opening` and seal it again under `sealing`."""
    path = _object(tmp_path, m, name)
    binding = sealed.Binding(workload, m.id, name)
    path.write_bytes(sealed.seal_bytes(sealed.open_bytes(path.read_bytes(), opening, binding),
                                       sealing, binding))
    return path.read_bytes()


def test_a_file_sealed_under_a_key_other_than_its_manifests_fails_authentication(store, tmp_path):
    """Both keys are in the ring (a rotation), and the manifest's sha256 agrees with the file
    sealed under the other key: the file's key must still be the manifest's."""
    m = commit(store, tmp_path, key_ring=ring(K1))
    resealed = _reseal(tmp_path, m, "files/images/pstree.img", ring(K1), ring(K2))
    manifest = json.loads(sealed.open_bytes(_object(tmp_path, m, "manifest.json").read_bytes(),
                                            ring(K1), sealed.Binding("ns/a", m.id, "manifest.json")))
    for f in manifest["files"]:
        if f["path"] == "images/pstree.img":
            f["size"], f["sha256"] = len(resealed), hashlib.sha256(resealed).hexdigest()
    _object(tmp_path, m, "manifest.json").write_bytes(sealed.seal_bytes(
        json.dumps(manifest).encode(), ring(K1), sealed.Binding("ns/a", m.id, "manifest.json")))
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        restore(store, tmp_path, key_ring=ring(K1, K2))


@pytest.mark.parametrize("field, value", [("key_id", "00" * 8), ("cipher", "none"),
                                          ("chunk_bytes", 4096)])
def test_a_manifest_whose_encryption_record_disagrees_with_its_sealing_fails(
        store, tmp_path, field, value):
    m = commit(store, tmp_path, key_ring=ring(K1))
    path, binding = _object(tmp_path, m, "manifest.json"), sealed.Binding("ns/a", m.id, "manifest.json")
    manifest = json.loads(sealed.open_bytes(path.read_bytes(), ring(K1), binding))
    manifest["encryption"][field] = value
    path.write_bytes(sealed.seal_bytes(json.dumps(manifest).encode(), ring(K1), binding))
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        restore(store, tmp_path, key_ring=ring(K1))


class _AuthenticationFails:
    def restore(self, manifest, before_criu=lambda: None):
        raise sealed.AuthenticationFailed("authentication failed: a file was tampered with")


def test_the_fallback_never_cold_starts_over_a_checkpoint_it_cannot_read(store, tmp_path):
    """The latest fails authentication and is quarantined; the one before it is sealed under a
    key this pod does not hold: a config error naming the setting, not a cold start."""
    older = commit(store, tmp_path, key_ring=ring(K1))
    commit(store, tmp_path, key_ring=ring(K2))
    repo = CheckpointRepository(store, "ns/a", keys=ring(K2))
    settings = types.SimpleNamespace(on_restore_failure="cold-start", restore_attempts=3)
    with pytest.raises(ConfigError, match=f"{older.id} is encrypted .*--encryption-key-file"):
        recovery.restore_latest(settings, repo, _AuthenticationFails())
