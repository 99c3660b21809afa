"""The s3:// store against a real S3-compatible server (SeaweedFS on 127.0.0.1).

Faults come from a small HTTP proxy in front of the server (tests/s3/faultproxy.py): SlowDown
answers, connection resets, lost answers, delays and hangs. Each test works under its own prefix
in one bucket. Tests named test_itemN_ are cited by the reliability list (3: committed is
committed; 9: leftovers are cleaned up).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import os
import threading
import time
import types
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.errors import RaceLost
from crikpy.checkpoint.manifest import new_id
from crikpy.deadline import ABORT, Deadline, DeadlineExceeded
from crikpy.errors import CorruptCheckpoint, StoreError
from crikpy.stores import open_store
from crikpy.stores.base import Stream
from crikpy.stores.s3 import CLEANUP_GRACE, MIB, S3Options, S3Store
from tests.harness.s3server import BUCKET, SECRET_KEY
from tests.helpers import sample_describe, sample_info
from tests.s3.faultproxy import FaultProxy

DESCRIBE = sample_describe()
INFO = sample_info()


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


def test_transfers_at_the_same_time_share_one_memory_budget(proxy, tmp_path):
    """During a dump several files move at once (each process's pages, the rest): together they
    hold at most `concurrency` parts, the documented bound of part size x concurrency."""
    store = make_store(proxy.endpoint, concurrency=3)
    src = random_file(tmp_path / "big", 30 * MIB)
    store.put_file("down", str(src))
    proxy.persistent = "delay:0.2"
    proxy.count_if = lambda method, path, headers: "partNumber=" in path or "Range" in headers
    errors = []

    def each(fn):
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (asserted below)
                errors.append(e)
        return threading.Thread(target=run)

    threads = [each(lambda: store.put_file("up-1", str(src))),
               each(lambda: store.put_file("up-2", str(src))),
               each(lambda: store.get_file("down", str(tmp_path / "back")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert proxy.max_in_flight == 3, "parts beyond the budget, or none in parallel"
    for key in ("up-1", "up-2"):  # their parts went through the same reused buffers
        store.get_file(key, str(tmp_path / key))
        assert (tmp_path / key).read_bytes() == src.read_bytes(), f"{key} came back changed"


def test_a_stream_written_in_odd_pieces_uploads_whole(store, tmp_path):
    """CRIU's pages reach the store through a Stream, in pieces that never line up with parts."""
    data = os.urandom(21 * MIB + 7)
    stream = Stream("pages-1.img")

    def produce():
        at, sizes = 0, itertools.cycle([1, 4095, MIB + 1, 3 * MIB - 5, 17])
        while at < len(data):
            n = next(sizes)
            stream.write(data[at:at + n])
            at += n
        stream.end()
    producer = threading.Thread(target=produce)
    producer.start()
    up = store.put_file("streamed", stream)
    producer.join()
    assert (up.size, up.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    store.get_file("streamed", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == data


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


def test_a_checkpoints_small_files_move_at_once_within_the_budget(proxy, tmp_path):
    """Dozens of small images, one request each: with 50 ms a request, one after another they
    would cost a second or more at every commit and every restore."""
    store = make_store(proxy.endpoint, concurrency=3)
    repo = CheckpointRepository(store, "ns/app")
    staging = tmp_path / "staging"
    (staging / "images").mkdir(parents=True)
    for i in range(12):
        (staging / "images" / f"core-{i}.img").write_bytes(os.urandom(1000 + i))
    proxy.persistent = "delay:0.05"
    proxy.count_if = lambda method, path, headers: "/files/" in path and method in ("PUT", "GET")
    manifest = repo.commit(staging, new_id(), INFO)
    assert proxy.max_in_flight == 3, "uploaded one after another, or beyond the budget"
    proxy.max_in_flight = 0
    repo.fetch(manifest, tmp_path / "back")
    assert proxy.max_in_flight == 3, "downloaded one after another, or beyond the budget"
    for i in range(12):
        assert ((tmp_path / "back" / "images" / f"core-{i}.img").read_bytes()
                == (staging / "images" / f"core-{i}.img").read_bytes())


def test_commit_fetch_and_pointer_over_s3(store, tmp_path):
    repo = CheckpointRepository(store, "ns/app")
    manifest = repo.commit(staged(tmp_path), new_id(), INFO)
    fresh = CheckpointRepository(store, "ns/app")
    assert fresh.latest() == manifest
    fresh.fetch(manifest, tmp_path / "restore")
    assert (tmp_path / "restore" / "images" / "pages-1.img").stat().st_size == 12 * MIB


def test_second_pod_with_same_name_loses_the_race(store, tmp_path):
    pod_a, pod_b = CheckpointRepository(store, "app"), CheckpointRepository(store, "app")
    assert pod_a.latest() is None and pod_b.latest() is None
    winner = pod_b.commit(staged(tmp_path), new_id(), INFO)
    loser_id = new_id()
    with pytest.raises(RaceLost):
        pod_a.commit(staged(tmp_path), loser_id, INFO)
    assert CheckpointRepository(store, "app").latest().id == winner.id
    assert {i.id: i.status for i in pod_a.list()}[loser_id] == "committed"  # kept aside


def test_object_changed_behind_crikpys_back_is_caught(store, tmp_path, s3_server):
    repo = CheckpointRepository(store, "app")
    manifest = repo.commit(staged(tmp_path), new_id(), INFO)
    key = f"{store.prefix}/app/checkpoints/{manifest.id}/files/images/pages-1.img"
    s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=os.urandom(12 * MIB))
    with pytest.raises(CorruptCheckpoint, match="does not match its manifest"):
        repo.fetch(manifest, tmp_path / "restore")


def test_retention_and_quarantine_over_s3(store, tmp_path):
    repo = CheckpointRepository(store, "app", keep=2)
    ids = [repo.commit(staged(tmp_path, 10), new_id(), INFO).id for _ in range(3)]
    repo.housekeeping(ids[-1], Deadline.after(30))
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
        manifest = repo.commit(staged(tmp_path), new_id(), INFO, Deadline.after(60))
    assert sorted(proxy.faults_seen()) == ["503", "503", "503", "reset"]
    assert sum(1 for e in logs if e["event"] == "store.retry") == 4
    assert CheckpointRepository(store, "app").latest() == manifest
    repo.fetch(manifest, tmp_path / "restore")


def test_store_too_slow_for_the_deadline_leaves_previous_checkpoint_latest(proxy, tmp_path,
                                                                          s3_server):
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app")
    previous = repo.commit(staged(tmp_path), new_id(), INFO)
    proxy.persistent = "hang"
    abandoned = new_id()
    with pytest.raises(DeadlineExceeded):
        repo.commit(staged(tmp_path), abandoned, INFO, Deadline.after(3))
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
        open_store(f"s3://{BUCKET}/p", S3Options(sse="AES256", sse_kms_key_id="k"))
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
        repo.commit(staged(tmp_path, 28 * MIB), new_id(), INFO)
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
    # The abort is tried before put_file returns, but eats at most CLEANUP_GRACE of the reserve.
    assert deadline.remaining() > -(CLEANUP_GRACE + 0.5), "cleanup held the checkpoint up"


# 3. Committed is committed

def test_item3_delete_failing_with_503_after_the_pointer_moved_is_still_committed(
        proxy, tmp_path):
    bound = 3.0  # housekeeping's, short for a test
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app", keep=1)
    first = repo.commit(staged(tmp_path, 10), new_id(), INFO)
    proxy.persistent, proxy.persistent_match = "503", "DELETE "  # retention of `first` fails
    started = time.monotonic()
    with capture_logs() as logs:
        second = repo.commit(staged(tmp_path, 10), new_id(), INFO)
        repo.housekeeping(second.id, Deadline.after(bound))
    took = time.monotonic() - started
    assert {m for m, _, f in proxy.seen if f} == {"DELETE"}, "the fault never hit retention"
    assert took < bound + 2, "housekeeping outlived its bound"
    [failed] = [e for e in logs if e["event"] == "checkpoint.housekeeping_failed"]
    assert failed["id"] == second.id and "503" in failed["error"]
    assert repo.latest_id() == second.id
    assert CheckpointRepository(store, "app").latest() == second
    assert first.id in {i.id for i in repo.list()}  # retention did not happen...

    proxy.persistent = None
    third = repo.commit(staged(tmp_path, 10), new_id(), INFO)
    repo.housekeeping(third.id, Deadline.after(30))
    assert [i.id for i in repo.list()] == [third.id]  # ...and caught up at the next commit


def test_item3_reads_failing_after_the_pointer_moved_are_bounded_too(proxy, tmp_path):
    bound = 3.0
    store = make_store(proxy.endpoint, retry_seconds=8)
    repo = CheckpointRepository(store, "app", keep=1)
    repo.commit(staged(tmp_path, 10), new_id(), INFO)
    # Object reads under checkpoints/ happen only in retention, after the pointer moved.
    proxy.persistent = "503"
    proxy.persistent_match = f"GET /{BUCKET}/{store.prefix}/app/checkpoints/"
    started = time.monotonic()
    second = repo.commit(staged(tmp_path, 10), new_id(), INFO)
    repo.housekeeping(second.id, Deadline.after(bound))
    assert CheckpointRepository(store, "app").latest_id() == second.id
    assert time.monotonic() - started < bound + 2


@pytest.mark.parametrize("earlier", [0, 1], ids=["first-pointer", "moving-pointer"])
def test_item3_lost_answer_to_the_pointer_write_is_read_back(proxy, tmp_path, earlier):
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app")
    for _ in range(earlier):  # 0: If-None-Match on a new pointer; 1: If-Match on an existing one
        repo.commit(staged(tmp_path, 10), new_id(), INFO)
    pointer = f"PUT /{BUCKET}/{store.prefix}/app/latest.json"
    proxy.inject("lost", match=pointer)
    with capture_logs() as logs:
        manifest = repo.commit(staged(tmp_path, 10), new_id(), INFO)
    assert proxy.faults_seen() == ["lost"]
    writes = [status for m, p, status in proxy.answered if f"{m} {p}".startswith(pointer)]
    assert writes[-2:] == [200, 412], "the retry did not meet its own landed write"
    assert [e["id"] for e in logs if e["event"] == "latest.confirmed"] == [manifest.id]
    assert CheckpointRepository(store, "app").latest() == manifest
    after = repo.commit(staged(tmp_path, 10), new_id(), INFO)  # the pointer version is known
    assert CheckpointRepository(store, "app").latest() == after


def test_item3_lost_answer_to_clearing_the_pointer_is_read_back(proxy, tmp_path):
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app")
    repo.commit(staged(tmp_path, 10), new_id(), INFO)
    proxy.inject("lost", match=f"PUT /{BUCKET}/{store.prefix}/app/latest.json")
    with capture_logs() as logs:
        repo.clear_latest(reason="workload exited")
    assert proxy.faults_seen() == ["lost"]
    assert CheckpointRepository(store, "app").latest_id() is None
    assert "latest.clear_skipped" not in [e["event"] for e in logs]


def test_item3_lost_answer_to_the_manifest_write_is_read_back(proxy, tmp_path):
    store = make_store(proxy.endpoint)
    repo = CheckpointRepository(store, "app")
    ckpt = new_id()
    manifest_put = f"PUT /{BUCKET}/{store.prefix}/app/checkpoints/{ckpt}/manifest.json"
    proxy.inject("lost", match=manifest_put)
    manifest = repo.commit(staged(tmp_path), ckpt, INFO)
    assert proxy.faults_seen() == ["lost"]
    writes = [status for m, p, status in proxy.answered if f"{m} {p}".startswith(manifest_put)]
    assert writes == [200, 412], "the retry did not meet its own landed write"
    fresh = CheckpointRepository(store, "app")
    assert fresh.latest() == manifest
    fresh.fetch(manifest, tmp_path / "restore")


def test_item3_manifest_read_back_does_not_take_another_writers_manifest(store, tmp_path):
    repo = CheckpointRepository(store, "app")
    ckpt = new_id()
    store.put_bytes(f"app/checkpoints/{ckpt}/manifest.json", b'{"id": "someone else"}')
    with pytest.raises(StoreError, match="already has another manifest"):
        repo.commit(staged(tmp_path, 10), ckpt, INFO)
    assert CheckpointRepository(store, "app").latest_id() is None


# 9. Leftovers are cleaned up

def uploads_of(s3_server, key: str) -> list[dict]:
    """The multipart uploads S3 still holds for `key` (begun, neither completed nor aborted)."""
    page = s3_server.client().list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    return [u for u in page.get("Uploads", []) if u["Key"] == key]


def abandoned_upload(s3_server, key: str, older_than: float) -> str:
    """A multipart upload with one 5 MiB part, never completed, as a killed writer leaves it;
    returns once the server's clock says it began more than `older_than` seconds ago."""
    client = s3_server.client()
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                       Body=os.urandom(5 * MIB))
    [upload] = uploads_of(s3_server, key)
    age = datetime.datetime.now(datetime.timezone.utc) - upload["Initiated"]
    time.sleep(max(0.0, older_than - age.total_seconds()))
    return upload_id


def test_item9_abandoned_multipart_upload_is_swept_at_the_next_commit(store, tmp_path, s3_server):
    key = f"{store.prefix}/app/checkpoints/{new_id()}/files/images/pages-1.img"
    abandoned_upload(s3_server, key, older_than=1.2)  # Initiated has whole seconds
    repo = CheckpointRepository(store, "app", stale_after=1)
    with capture_logs() as logs:
        manifest = repo.commit(staged(tmp_path, 10), new_id(), INFO)
        repo.housekeeping(manifest.id, Deadline.after(30))
    assert uploads_of(s3_server, key) == []
    assert [e["key"] for e in logs if e["event"] == "store.upload_swept"] == [
        key[len(store.prefix) + 1:]]
    assert CheckpointRepository(store, "app").latest() == manifest


def test_item9_a_racing_writers_multipart_upload_survives_a_commit(store, tmp_path, s3_server):
    key = f"{store.prefix}/app/checkpoints/{new_id()}/files/images/pages-1.img"
    upload_id = abandoned_upload(s3_server, key, older_than=1.2)  # as old as the swept one
    repo = CheckpointRepository(store, "app", stale_after=600)  # its writer may still be alive
    repo.housekeeping(repo.commit(staged(tmp_path, 10), new_id(), INFO).id, Deadline.after(30))
    assert [u["UploadId"] for u in uploads_of(s3_server, key)] == [upload_id]
    client = s3_server.client()  # and the racing writer can still finish it
    etag = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"][0]["ETag"]
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 5 * MIB


def test_item9_failed_multipart_upload_is_aborted_before_put_file_returns(proxy, tmp_path,
                                                                          s3_server):
    store = make_store(proxy.endpoint)
    src = random_file(tmp_path / "big", 12 * MIB)  # 3 parts
    proxy.persistent, proxy.persistent_match = "503", "partNumber="  # parts fail, not the abort
    proxy.inject("delay:0.3", match="DELETE ")  # a slow abort: put_file must wait for it
    deadline = Deadline.after(2)
    with pytest.raises(DeadlineExceeded):
        store.put_file("big", str(src), deadline=deadline)
    assert uploads_of(s3_server, f"{store.prefix}/big") == [], "upload left behind"
    assert [(m, f) for m, p, f in proxy.seen if "uploadId=" in p and "partNumber=" not in p] == [
        ("DELETE", "delay:0.3")]
    assert deadline.remaining() > -(CLEANUP_GRACE + 0.5)


def test_a_credentials_file_is_all_crikpy_needs(s3_server, monkeypatch, tmp_path):
    """The keys reach crikpy through a file (a mounted Secret), not the environment the
    workload inherits."""
    from tests.harness.s3server import ACCESS_KEY  # noqa: PLC0415
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    with pytest.raises(StoreError):  # the control: without the file, no credentials at all
        make_store(s3_server.endpoint, retry_seconds=1).put_bytes("k", b"v")
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                     f"aws_secret_access_key = {SECRET_KEY}\n")
    store = make_store(s3_server.endpoint, credentials_file=str(creds))
    store.put_bytes("k", b"v")
    assert store.get_bytes("k").data == b"v"
    assert "shared-credentials-file" in store.describe_credentials()


# A restore's download when the store fails: the store's fault (exit 173), bounded, never
# counted against the checkpoint; the budget of part slots is whole again afterwards.

def _many_files(tmp_path: Path, n: int) -> Path:
    root = tmp_path / f"staging-{uuid.uuid4().hex[:6]}"
    (root / "images").mkdir(parents=True)
    for i in range(n):
        random_file(root / "images" / f"core-{i}.img", 1000 + i)
    return root


def test_item5_a_503_storm_on_a_restores_downloads_ends_in_a_store_error(proxy, tmp_path):
    """More failing files than part slots: before, each failed file kept its slot, and the
    download waited for a slot forever."""
    store = make_store(proxy.endpoint, retry_seconds=1, concurrency=4)
    repo = CheckpointRepository(store, "app")
    manifest = repo.commit(_many_files(tmp_path, 12), new_id(), INFO)
    proxy.persistent = "503"
    proxy.persistent_match = f"GET /{BUCKET}/{store.prefix}/app/checkpoints/{manifest.id}/files/"
    outcome: dict = {}

    def fetch() -> None:
        try:
            repo.fetch(manifest, tmp_path / "back", Deadline.never(on_sigterm=ABORT))
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e
    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(60)
    proxy.persistent = None
    assert not thread.is_alive(), "the download never ended"
    assert isinstance(outcome.get("error"), StoreError), outcome
    assert store._parts._value == store.options.concurrency, "part slots were not given back"


class _FetchingMigrator:
    """Migrator.restore's part that needs no CRIU: fetch the checkpoint for real, then count the
    attempt as it does before CRIU runs, then `criu` (succeeds unless it raises)."""

    def __init__(self, repo, dest: Path, criu=lambda: None, before_fetch=lambda: None) -> None:
        self.repo, self.dest, self.criu, self.before_fetch = repo, dest, criu, before_fetch

    def restore(self, manifest, before_criu=lambda: None):
        self.before_fetch()
        self.repo.fetch(manifest, self.dest / uuid.uuid4().hex[:6],
                        Deadline.never(on_sigterm=ABORT))
        before_criu()
        self.criu()
        return 4242


def _criu_fails():
    from crikpy.errors import CriuError  # noqa: PLC0415
    raise CriuError("criu said no")


def _restore(store, tmp_path, criu=lambda: None, before_fetch=lambda: None):
    from crikpy import recovery  # noqa: PLC0415
    settings = types.SimpleNamespace(restore_attempts=3, on_restore_failure="cold-start")
    repo = CheckpointRepository(store, "app")
    return recovery.restore_latest(settings, repo,
                                   _FetchingMigrator(repo, tmp_path, criu, before_fetch))


def _failures(store, ckpt_id) -> int:
    record = CheckpointRepository(store, "app").attempts(ckpt_id)
    return record["failures"]


@pytest.mark.parametrize("fault", ["store down during the download", "reset cannot be deleted"])
def test_item4_only_a_failure_of_the_restore_itself_counts_against_a_checkpoint(
        proxy, tmp_path, fault):
    store = make_store(proxy.endpoint, retry_seconds=1)
    manifest = CheckpointRepository(store, "app").commit(staged(tmp_path, MIB), new_id(), INFO)
    for _ in range(3):
        if fault == "store down during the download":  # every request, once it began

            def outage() -> None:
                proxy.persistent, proxy.persistent_match = "503", ""
            with pytest.raises(StoreError) as failed:
                _restore(store, tmp_path, before_fetch=outage)
            assert failed.value.exit_code == 173
        else:  # three good restores, on a bucket that answers 503 to DELETE
            proxy.persistent, proxy.persistent_match = "503", "DELETE "
            assert _restore(store, tmp_path).pid == 4242
        proxy.persistent = None
        assert _failures(store, manifest.id) == 0
    with capture_logs() as logs, pytest.raises(Exception, match="attempt 1 of 3"):
        _restore(store, tmp_path, criu=_criu_fails)
    assert not [e for e in logs if e["event"] == "checkpoint.quarantined"]


def test_item6_a_sigterm_during_a_hung_download_stops_it(proxy, tmp_path, monkeypatch):
    """Noticed within a moment, not when the read times out (30 s by default, the whole grace
    period)."""
    import crikpy.deadline as deadline_module  # noqa: PLC0415
    from crikpy.errors import Interrupted  # noqa: PLC0415
    store = make_store(proxy.endpoint, retry_seconds=20, read_timeout=20)
    repo = CheckpointRepository(store, "app")
    manifest = repo.commit(staged(tmp_path, MIB), new_id(), INFO)
    proxy.persistent, proxy.persistent_match = "hang", "/files/"
    monkeypatch.setattr(deadline_module, "_sigterm_seen_at", None)
    arrives = threading.Timer(1.0, lambda: setattr(deadline_module, "_sigterm_seen_at",
                                                   time.monotonic()))
    arrives.start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        repo.fetch(manifest, tmp_path / "back", Deadline.never(on_sigterm=ABORT))
    proxy.persistent = None
    assert time.monotonic() - started < 10, "the SIGTERM was noticed only when the read timed out"


def test_no_deadline_means_the_store_call_bound(proxy, monkeypatch):
    """A call given no deadline (the CLI, a start's records) gives up after
    budget.STORE_CALL_SECONDS, as on every store, however long the store keeps failing."""
    from crikpy import budget  # noqa: PLC0415
    monkeypatch.setattr(budget, "STORE_CALL_SECONDS", 1.0)  # the bound, short for a test
    store = S3Store(BUCKET, f"t-{uuid.uuid4().hex[:8]}", S3Options(
        endpoint_url=proxy.endpoint, region="us-east-1", path_style=True))
    proxy.persistent = "503"
    outcome: dict = {}

    def write() -> None:
        try:
            store.put_bytes("k", b"v")
        except BaseException as e:  # noqa: BLE001  (asserted below)
            outcome["error"] = e
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(budget.STORE_CALL_SECONDS + 5)
    proxy.persistent = None
    assert not writer.is_alive(), "still retrying past the bound"
    assert isinstance(outcome.get("error"), StoreError) and "SlowDown" in str(outcome["error"])
    assert len(proxy.seen) >= 2, "not retried at all"


# Credentials scoped to the workload's own keys (SeaweedFS identity "scoped": Read, List and
# Write on BUCKET/SCOPED_PREFIX/* only), as an IAM policy per workload would be.

def _scoped_env(s3_server) -> dict[str, str]:
    from tests.harness.s3server import SCOPED_ACCESS_KEY, SCOPED_SECRET_KEY  # noqa: PLC0415
    return {**s3_server.env, "AWS_ACCESS_KEY_ID": SCOPED_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SCOPED_SECRET_KEY}


def _check(env: dict[str, str], *args: str) -> str:
    """`crikpy check`'s line about the store."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CRIKPY_", "AWS_"))},
           **env}
    out = subprocess.run([sys.executable, "-m", "crikpy", "check", "--s3-path-style", *args],
                         capture_output=True, text=True, env=env, timeout=120)
    [line] = [ln for ln in out.stdout.splitlines() if ln.split()[1] == "store"]
    return line


def test_credentials_scoped_to_the_workload_commit_and_move_the_pointer(s3_server, monkeypatch,
                                                                        tmp_path):
    from tests.harness.s3server import SCOPED_PREFIX  # noqa: PLC0415
    for key, value in _scoped_env(s3_server).items():
        monkeypatch.setenv(key, value)
    root, workload = SCOPED_PREFIX.split("/", 1)  # the store's prefix; namespace/name
    store = S3Store(BUCKET, root, S3Options(endpoint_url=s3_server.endpoint, region="us-east-1",
                                            path_style=True, retry_seconds=5))
    with pytest.raises(StoreError, match="AccessDenied"):  # the control: the scope holds
        store.put_bytes("elsewhere/k", b"v")
    repo = CheckpointRepository(store, workload)
    manifest = repo.commit(staged(tmp_path, 10), new_id(), INFO)
    assert CheckpointRepository(store, workload).latest() == manifest
    assert not [k for k in store.list(f"{workload}/") if "probe" in k], "probe left behind"


def test_check_with_credentials_scoped_to_the_workload_is_ok(s3_server):
    from tests.harness.s3server import SCOPED_PREFIX  # noqa: PLC0415
    root, namespace, name = SCOPED_PREFIX.split("/")
    line = _check(_scoped_env(s3_server), "--store", f"s3://{BUCKET}/{root}",
                  "--namespace", namespace, "--name", name)
    assert line.startswith("ok") and "conditional" in line, line
    line = _check(_scoped_env(s3_server), "--store", f"s3://{BUCKET}/{root}",
                  "--namespace", namespace, "--name", "other")
    assert line.startswith("problem") and "AccessDenied" in line, line


def test_check_reports_conditional_writes_refused_where_plain_ones_work(s3_server, proxy):
    """The latest pointer is always written conditionally: a check that only tried a plain
    write said "writable" where every commit then failed."""
    proxy.deny_conditions = True
    line = _check({**s3_server.env, "AWS_ENDPOINT_URL": proxy.endpoint},
                  "--store", f"s3://{BUCKET}/check-{uuid.uuid4().hex[:6]}", "--name", "app")
    assert line.startswith("problem") and "AccessDenied" in line and "conditional" in line, line
    assert any(m == "PUT" for m, _, _ in proxy.seen), "no write reached the store"


def _store_threads() -> int:
    """Live threads but the fault proxy's own (one per request it holds)."""
    return sum(1 for t in threading.enumerate() if "process_request" not in t.name)


def test_hung_part_uploads_end_at_the_deadline_before_the_abort(proxy, tmp_path, s3_server):
    """A part still being sent when put_file gives up could land after the abort, where neither
    the sweep nor a lifecycle rule sees it; and a thread per request left hanging piles up."""
    store = make_store(proxy.endpoint)  # read timeout 30 s: far past the deadline
    src = random_file(tmp_path / "big", 20 * MIB)  # 4 parts, as many as the concurrency
    store.put_bytes("warm", b"1")  # the part pool and connections exist before counting
    proxy.persistent, proxy.persistent_match = "held:6", "partNumber="
    threads = _store_threads() + store.options.concurrency  # and the part pool, once started
    for attempt in range(2):
        deadline = Deadline.after(2)
        with pytest.raises(DeadlineExceeded):
            store.put_file(f"big-{attempt}", str(src), deadline=deadline)
        assert deadline.remaining() > -(CLEANUP_GRACE + 1.0), "put_file outlived its deadline"
        answered = len(proxy.answered)
        assert _store_threads() <= threads, "threads left behind by the requests"
    time.sleep(6.5)  # the held parts come due: only those whose client still waits go through
    proxy.persistent = None
    late = [p for m, p, _ in proxy.answered[answered:] if "partNumber=" in p]
    assert late == [], "a part upload reached the server after put_file returned"
    for attempt in range(2):
        assert uploads_of(s3_server, f"{store.prefix}/big-{attempt}") == [], "upload left behind"
    assert _store_threads() <= threads
