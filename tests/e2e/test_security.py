"""A checkpoint is secret at rest and restored only if it is this workload's own (real S3, real CRIU).

The attacker here has write access to the bucket (or the volume) and nothing else: every check
reads or rewrites objects with a plain S3 client, as such an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import tarfile

import pytest

from tests.e2e.evidence import counts
from tests.e2e.podman import events
from tests.harness.s3server import BUCKET
from tests.helpers import s3_env

pytestmark = pytest.mark.e2e
KEYS_IN_CONTAINER = "/etc/crikpy-keys"


def key_file(tmp_path, name: str, *keys: bytes):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "keys").write_text("".join(base64.b64encode(k).decode() + "\n" for k in keys))
    return ["-v", f"{folder}:{KEYS_IN_CONTAINER}:ro"]


def objects(client, prefix: str) -> dict[str, bytes]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return found


def _prefix(env) -> str:
    return env["CRIKPY_STORE"].split(f"s3://{BUCKET}/", 1)[1]


@pytest.fixture
def s3(s3_server):
    return s3_server.client()


def test_with_a_key_no_byte_of_the_workloads_secret_reaches_the_bucket(images, containers,
                                                                       s3_server, s3, tmp_path):
    marker = f"SECRET-{secrets.token_hex(12)}"
    k1 = secrets.token_bytes(32)
    for keyed in (False, True):  # without a key first: proves the marker is there to be found
        # Compression off: this is about encryption, and compressed bytes would hide the
        # marker from the control as well.
        env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "secretive",
               "SECRET_MARKER": marker, "CRIKPY_COMPRESSION": "none"}
        extra = []
        if keyed:
            env["CRIKPY_ENCRYPTION_KEY_FILE"] = f"{KEYS_IN_CONTAINER}/keys"
            extra = key_file(tmp_path, "k1", k1)
        # The secret is in a file the workload writes too: the container's files are sealed.
        command = ["sh", "-c", "echo $SECRET_MARKER > /var/tmp/secret && "
                               "exec python3 /opt/counter/counter.py"]
        c = containers(images["counter"], env=env, extra=extra, command=command)
        c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
        assert c.stop() == 0
        stored = objects(s3, _prefix(env))
        assert [k for k in stored if k.endswith("/container-files.tar")], sorted(stored)
        holders = [key for key, body in stored.items() if marker.encode() in body]
        if not keyed:
            assert holders, "the control found no marker: the check below would prove nothing"
            assert events(c.logs(), "checkpoint.unencrypted")
            continue
        assert not holders, f"the secret is in {holders}"
        assert not [k for k, body in stored.items() if b'"command"' in body]
        restored = containers(images["counter"], env=env, extra=extra, command=command)
        restored.wait_for(lambda _: len(counts(restored)) >= 2, what="the restored counter")
        assert counts(restored)[0] == counts(c)[-1] + 1
        assert restored.exec("cat", "/var/tmp/secret").strip() == marker


def test_restores_with_the_key_and_after_a_rotation(images, containers, s3_server, tmp_path):
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "rotating",
           "CRIKPY_ENCRYPTION_KEY_FILE": f"{KEYS_IN_CONTAINER}/keys"}
    last = None
    for step, keys in enumerate([(k1,), (k2, k1), (k2,)]):  # rotate: new first, then old out
        c = containers(images["counter"], env=env, extra=key_file(tmp_path, f"step{step}", *keys))
        c.wait_for(lambda _: len(counts(c)) >= 2, what="counts")
        if last is not None:
            assert counts(c)[0] == last + 1, f"step {step} did not restore"
        assert c.stop() == 0
        last = counts(c)[-1]


def test_tampered_truncated_foreign_or_wrong_key_checkpoints_never_restore(
        images, containers, s3_server, s3, tmp_path):
    k1 = secrets.token_bytes(32)
    env = {**s3_env(s3_server.endpoint, s3_server), "CRIKPY_NAME": "target",
           "CRIKPY_ENCRYPTION_KEY_FILE": f"{KEYS_IN_CONTAINER}/keys"}
    keys = key_file(tmp_path, "k1", k1)
    prefix = _prefix(env)

    def fresh_checkpoint(name="target") -> list[int]:
        c = containers(images["counter"], env={**env, "CRIKPY_NAME": name}, extra=keys)
        c.wait_for(lambda _: len(counts(c)) >= 3, what="counts")
        assert c.stop() == 0
        return counts(c)

    def start_cold(name="target") -> str:
        c = containers(images["counter"], env={**env, "CRIKPY_NAME": name}, extra=keys)
        c.wait_for(lambda _: len(counts(c)) >= 2, what="a start")
        assert counts(c)[0] == 0, "a tampered checkpoint was restored"
        [quarantined] = events(c.logs(), "checkpoint.quarantined")
        assert quarantined["reason"].startswith("authentication failed"), quarantined
        c.remove()
        return quarantined["id"]

    def pages_key(name="target") -> str:
        stored = objects(s3, f"{prefix}/{name}/checkpoints/")
        return max((k for k in stored if "/pages-" in k), key=lambda k: len(stored[k]))

    # Each case has its own workload, so exactly one checkpoint is there to restore.
    # A wrong key: a config error naming the setting; the checkpoint is not touched.
    fresh_checkpoint()
    wrong = containers(images["counter"], env=env,
                       extra=key_file(tmp_path, "k3", secrets.token_bytes(32)))
    assert wrong.wait() == 172 and "--encryption-key-file" in wrong.logs()
    assert not counts(wrong) and not events(wrong.logs(), "checkpoint.quarantined")

    # One flipped byte anywhere in the pages, then a truncated object.
    for name, damage in (
            ("flipped", lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1:]),
            ("truncated", lambda b: b[: len(b) - 4096])):
        fresh_checkpoint(name)
        key = pages_key(name)
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        s3.put_object(Bucket=BUCKET, Key=key, Body=damage(body))
        start_cold(name)

    # Workload A's checkpoint copied, pointer and all, under B's name.
    fresh_checkpoint("workload-a")
    for key, body in objects(s3, f"{prefix}/workload-a/").items():
        s3.put_object(Bucket=BUCKET, Key=key.replace("/workload-a/", "/workload-b/"), Body=body)
    start_cold("workload-b")


def test_without_a_key_a_hostile_manifest_writes_nothing_outside_the_configured_paths(
        images, containers, volume):
    env = {"CRIKPY_NAME": "victim", "STATE_MIB": "8"}  # its config names /var/lib/stateful only
    first = containers(images["stateful"], volume=volume, env=env)
    first.wait_for(lambda _: "stateful " in first.logs(), what="a tick")
    true_before = first.exec("sha256sum", "/usr/bin/true").split()[0]
    assert first.stop() == 0

    # The attacker rewrites the archive and the manifest (no key: nothing authenticates them).
    [manifest_path] = volume.glob("victim/checkpoints/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    original = manifest_path.parent / "files" / "extra.tar"
    archive = io.BytesIO()
    with tarfile.open(original) as genuine, \
            tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in genuine.getmembers():  # the journal the restore needs, then the payload
            tar.addfile(member, genuine.extractfile(member) if member.isreg() else None)
        for name, data in (("etc/crikpy-pwned", b"pwned"), ("usr/bin/true", b"#!/bin/sh\nexit 1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = archive.getvalue()
    original.write_bytes(body)
    for entry in manifest["files"]:
        if entry["path"] == "extra.tar":
            entry.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
    manifest["additional_paths"] += ["/etc/crikpy-pwned", "/usr/bin/true"]
    manifest_path.write_text(json.dumps(manifest))

    second = containers(images["stateful"], volume=volume, env=env)
    second.wait_for(lambda _: "stateful " in second.logs(), what="the restored workload")
    assert events(second.logs(), "restore.done"), "the genuine part should still restore"
    ignored = {e["path"] for e in events(second.logs(), "additional_path.ignored")}
    assert ignored == {"/etc/crikpy-pwned", "/usr/bin/true"}
    assert "crikpy-pwned" not in second.exec("ls", "/etc")
    assert second.exec("sha256sum", "/usr/bin/true").split()[0] == true_before
