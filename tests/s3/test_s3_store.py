"""The s3:// store against a real S3-compatible server (SeaweedFS on 127.0.0.1).

Faults come from a small HTTP proxy in front of the server (tests/s3/faultproxy.py): SlowDown
answers, connection resets, delays and hangs. Each test works under its own prefix in one bucket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crikpy.checkpoint.commit import CheckpointRepository, RaceLost
from crikpy.checkpoint.manifest import new_id
from crikpy.deadline import Deadline, DeadlineExceeded
from crikpy.errors import CorruptCheckpoint, StoreError
from crikpy.stores import open_store
from crikpy.stores.s3 import MIB, S3Options, S3Store
from tests.harness.s3server import BUCKET, SECRET_KEY
from tests.s3.faultproxy import FaultProxy

DESCRIBE = dict(name="app", created_at="2026-11-22T10:00:00+00:00", command=["app"], root_pid=9001,
                stdio={}, additional_paths=[], criu_version="4.2.1", kernel="6.18",
                hostname="node", dump_seconds=0.1)


@pytest.fixture(autouse=True)
def credentials(s3_server, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    yield p
    p.close()


def make_store(endpoint: str, **options) -> S3Store:
    defaults = dict(endpoint_url=endpoint, region="us-east-1", path_style=True,
                    part_size=5 * MIB, concurrency=4, retry_seconds=5)
    return S3Store(BUCKET, f"t-{uuid.uuid4().hex[:8]}", S3Options(**{**defaults, **options}))


@pytest.fixture
def store(s3_server):
    return make_store(s3_server.endpoint)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def staged(tmp_path: Path, size: int = 12 * MIB) -> Path:
    root = tmp_path / f"staging-{uuid.uuid4().hex[:6]}"
    (root / "images").mkdir(parents=True)
    random_file(root / "images" / "pages-1.img", size)
    (root / "images" / "core-9001.img").write_bytes(b"core" * 100)
    return root


def test_multipart_upload_and_ranged_download_round_trip(store, tmp_path, s3_server):
    src = random_file(tmp_path / "big", 23 * MIB + 123)
    up = store.put_file("big", str(src))
    assert (up.size, up.sha256) == (src.stat().st_size, hashlib.sha256(src.read_bytes()).hexdigest())
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{store.prefix}/big")
    assert head["ETag"].strip('"').endswith("-5"), "not uploaded as 5 multipart parts"

    down = store.get_file("big", str(tmp_path / "back"))
    assert down == up
    assert (tmp_path / "back").read_bytes() == src.read_bytes()


def test_parts_move_in_parallel_but_never_beyond_concurrency(proxy, tmp_path):
    store = make_store(proxy.endpoint, concurrency=3)
    proxy.persistent = "delay:0.3"
    src = random_file(tmp_path / "big", 30 * MIB)
    store.put_file("big", str(src))
    assert proxy.max_in_flight == 3
    proxy.max_in_flight = 0
    store.get_file("big", str(tmp_path / "back"))
    assert proxy.max_in_flight == 3


def test_small_file_is_one_put(store, tmp_path, s3_server):
    src = random_file(tmp_path / "small", 1000)
    assert store.put_file("small", str(src)).size == 1000
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{store.prefix}/small")
    assert "-" not in head["ETag"]


def test_listing_follows_pagination(proxy):
    store = make_store(proxy.endpoint, list_page_size=3)
    keys = {f"dir/k{i:02d}" for i in range(10)}
    for key in keys:
        store.put_bytes(key, b"x")
    assert set(store.list("dir/")) == keys
    assert sum(1 for m, p, _ in proxy.seen if m == "GET" and "list-type=2" in p) == 4


def test_commit_fetch_and_pointer_over_s3(store, tmp_path):
    repo = CheckpointRepository(store, "ns/app")
    manifest = repo.commit(staged(tmp_path), new_id(), DESCRIBE)
    fresh = CheckpointRepository(store, "ns/app")
    assert fresh.latest() == manifest
    fresh.fetch(manifest, tmp_path / "restore")
    assert (tmp_path / "restore" / "images" / "pages-1.img").stat().st_size == 12 * MIB


def test_second_pod_with_same_name_loses_the_race(store, tmp_path):
    pod_a, pod_b = CheckpointRepository(store, "app"), CheckpointRepository(store, "app")
    assert pod_a.latest() is None and pod_b.latest() is None
    winner = pod_b.commit(staged(tmp_path), new_id(), DESCRIBE)
    loser_id = new_id()
    with pytest.raises(RaceLost):
        pod_a.commit(staged(tmp_path), loser_id, DESCRIBE)
    assert CheckpointRepository(store, "app").latest().id == winner.id
    assert {i.id: i.status for i in pod_a.list()}[loser_id] == "committed"  # kept aside


def test_object_changed_behind_crikpys_back_is_caught(store, tmp_path, s3_server):
    repo = CheckpointRepository(store, "app")
    manifest = repo.commit(staged(tmp_path), new_id(), DESCRIBE)
    key = f"{store.prefix}/app/checkpoints/{manifest.id}/files/images/pages-1.img"
    s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=os.urandom(12 * MIB))
    with pytest.raises(CorruptCheckpoint, match="does not match its manifest"):
        repo.fetch(manifest, tmp_path / "restore")


def test_retention_and_quarantine_over_s3(store, tmp_path):
    repo = CheckpointRepository(store, "app", keep=2)
    ids = [repo.commit(staged(tmp_path, 10), new_id(), DESCRIBE).id for _ in range(3)]
    assert [i.id for i in repo.list()] == ids[1:]
    assert not list(store.list(f"app/checkpoints/{ids[0]}/"))
    repo.quarantine(ids[2], "criu restore failed: test")
    assert repo.latest() is None
    assert [(i.status, i.reason) for i in repo.list()][-1] == ("quarantined",
                                                               "criu restore failed: test")


def test_transient_errors_are_retried_and_the_commit_lands(proxy, tmp_path):
    store = make_store(proxy.endpoint)
    proxy.inject("503", times=2, match="partNumber=")
    proxy.inject("reset", times=1, match="partNumber=2")
    proxy.inject("503", times=1, match="latest.json")
    repo = CheckpointRepository(store, "app")
    with capture_logs() as logs:
        manifest = repo.commit(staged(tmp_path), new_id(), DESCRIBE, Deadline.after(60))
    assert sorted(proxy.faults_seen()) == ["503", "503", "503", "reset"]
    assert sum(1 for e in logs if e["event"] == "store.retry") == 4
    assert CheckpointRepository(store, "app").latest() == manifest
    repo.fetch(manifest, tmp_path / "restore")


def test_store_too_slow_for_the_deadline_leaves_previous_checkpoint_latest(proxy, tmp_path,
                                                                          s3_server):
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app")
    previous = repo.commit(staged(tmp_path), new_id(), DESCRIBE)
    proxy.persistent = "hang"
    abandoned = new_id()
    with pytest.raises(DeadlineExceeded):
        repo.commit(staged(tmp_path), abandoned, DESCRIBE, Deadline.after(3))
    proxy.persistent = None
    direct = S3Store(BUCKET, store.prefix,
                     dataclasses.replace(store.options, endpoint_url=s3_server.endpoint))
    direct = CheckpointRepository(direct, "app")
    assert direct.latest() == previous
    assert {i.id: i.status for i in direct.list()}.get(abandoned) in (None, "incomplete")


def test_retries_stop_at_the_deadline_when_errors_persist(proxy, tmp_path):
    store = make_store(proxy.endpoint)
    proxy.persistent = "503"
    src = random_file(tmp_path / "f", 100)
    deadline = Deadline.after(2)
    with pytest.raises(DeadlineExceeded):
        store.put_file("f", str(src), deadline=deadline)
    assert -1.0 < deadline.remaining() < 0.6
    assert len(proxy.seen) >= 3


@pytest.mark.parametrize("change, message", [
    (lambda env: env.update(AWS_SECRET_ACCESS_KEY=SECRET_KEY + "x"), "secret key does not match"),
    (lambda env: env.update(AWS_ACCESS_KEY_ID="NOSUCHKEY"), "access key is unknown"),
])
def test_permanent_errors_fail_fast_with_what_to_fix(s3_server, monkeypatch, change, message):
    env = dict(s3_server.env)
    change(env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = make_store(s3_server.endpoint)
    with pytest.raises(StoreError, match=message):
        store.put_bytes("x", b"1", deadline=Deadline.after(30))


def test_missing_bucket_is_named(s3_server):
    store = S3Store("no-such-bucket", "p", S3Options(endpoint_url=s3_server.endpoint,
                                                     region="us-east-1", path_style=True))
    with pytest.raises(StoreError, match="bucket does not exist"):
        list(store.list(""))


def test_unreachable_endpoint_is_a_store_error():
    store = make_store("http://127.0.0.1:9", retry_seconds=0.5)
    with pytest.raises(StoreError, match="is the endpoint reachable"):
        store.get_bytes("x")


def test_server_ignoring_conditions_is_detected_once_and_writes_go_on(proxy):
    proxy.ignore_conditions = True
    store = make_store(proxy.endpoint)
    with capture_logs() as logs:
        store.put_bytes("k", b"1", if_absent=True)
        store.put_bytes("k", b"2", if_absent=True)  # would be refused by an honouring server
        store.put_bytes("k", b"3", if_match='"stale"')
    warnings = [e for e in logs if e["event"] == "store.conditional_writes_unsupported"]
    assert len(warnings) == 1
    assert store.get_bytes("k").data == b"3"


def test_server_honouring_conditions_refuses_overwrite(store):
    from crikpy.stores import PreconditionFailed

    store.put_bytes("k", b"1", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("k", b"2", if_absent=True)
    etag = store.get_bytes("k").etag
    store.put_bytes("k", b"3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("k", b"4", if_match=etag)


def test_sse_and_storage_class_reach_s3(s3_server, tmp_path):
    store = make_store(s3_server.endpoint, sse="AES256", storage_class="STANDARD")
    store.put_file("enc", str(random_file(tmp_path / "f", 100)))
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{store.prefix}/enc")
    assert head.get("ServerSideEncryption") == "AES256"


def test_bad_options_are_config_errors():
    from crikpy.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 5 MiB"):
        S3Options(part_size=MIB)
    with pytest.raises(ConfigError, match="needs --s3-sse aws:kms"):
        S3Options(sse="AES256", sse_kms_key_id="k")
    with pytest.raises(ConfigError, match="names no bucket"):
        open_store("s3:///prefix")


def test_check_command_proves_bucket_writable_and_names_credential_source(s3_server):
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")},
           **s3_server.env}
    out = subprocess.run([sys.executable, "-m", "crikpy", "check", "--name", "probe",
                          "--store", f"s3://{BUCKET}/check", "--s3-path-style"],
                         capture_output=True, text=True, env=env, timeout=120)
    [line] = [ln for ln in out.stdout.splitlines() if ln.split()[1] == "store"]
    assert line.startswith("ok") and "credentials: env" in line
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in out.stdout + out.stderr


def test_long_transfers_log_progress(proxy, tmp_path):
    store = make_store(proxy.endpoint, concurrency=1)
    proxy.persistent = "delay:0.5"  # 6 parts one at a time: over 3 s, past one progress interval
    repo = CheckpointRepository(store, "app")
    with capture_logs() as logs:
        repo.commit(staged(tmp_path, 28 * MIB), new_id(), DESCRIBE)
    progress = [e for e in logs if e["event"] == "transfer.progress"]
    assert progress, "no progress event during a long upload"
    assert progress[0]["direction"] == "upload" and progress[0]["total_bytes"] > 28 * MIB
    assert 0 < progress[0]["percent"] < 100 and progress[0]["mb_per_s"] > 0


def test_multipart_upload_abandoned_at_the_deadline_returns_in_time(proxy, tmp_path):
    store = make_store(proxy.endpoint)
    src = random_file(tmp_path / "big", 20 * MIB)
    proxy.inject("hang", times=100, match="uploadId=")  # parts hang, and so would the abort
    deadline = Deadline.after(3)
    with pytest.raises(DeadlineExceeded):
        store.put_file("big", str(src), deadline=deadline)
    assert deadline.remaining() > -2, "cleanup after the deadline held the checkpoint up"
