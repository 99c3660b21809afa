"""Two pods of one name at once (a Deployment rollout, a StatefulSet pod rescheduled while its
predecessor still stops): what one pod does to the latest pointer must never undo the other's
checkpoint, whichever store and whether or not PID 1 re-executed itself lean (issue 18, found
1, 2, 4 and 6). Real processes, a real `crikpy run`, a real SeaweedFS; the other pod's commit is
made by the same repository code a pod runs.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.stores import open_store
from tests.harness.s3server import BUCKET
from tests.helpers import WORKLOAD, Run, sample_info, staged


def _store_url(kind: str, tmp_path) -> str:
    if kind == "file":
        return f"file://{tmp_path / 'store'}"
    return f"s3://{BUCKET}/overlap-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


def _start_pod_a(tmp_path, url: str, *extra: str) -> Run:
    path_style = ["--s3-path-style"] if url.startswith("s3://") else []
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
              extra=["--store", url, *path_style, *extra])
    assert run.readline().startswith("ready")
    if url.startswith("s3://"):
        _wait_for_the_lean_re_exec(run.proc.pid)
    return run


def _wait_for_the_lean_re_exec(pid: int) -> None:
    """An s3:// start loads boto3, so PID 1 re-executes itself: wait until it has."""
    ends = time.monotonic() + 30
    while time.monotonic() < ends:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if b"CRIKPY_HANDOVER=" in f.read():
                return
        time.sleep(0.05)
    pytest.fail("crikpy did not re-execute itself lean within 30 s")


def _pod_b_commits(url: str, tmp_path) -> str:
    repo = CheckpointRepository(open_store(url), "app")
    return repo.commit(staged(tmp_path), new_id(), sample_info()).id


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_pod_whose_workload_exits_leaves_the_other_pods_newer_checkpoint_latest(
        tmp_path, s3_env, kind):
    url = _store_url(kind, tmp_path)
    pod_a = _start_pod_a(tmp_path, url)
    pod_b_checkpoint = _pod_b_commits(url, tmp_path)
    pod_a.proc.send_signal(signal.SIGINT)  # A's workload exits on its own (code 42)
    code, _ = pod_a.finish()
    assert code == 42
    assert CheckpointRepository(open_store(url), "app").latest_id() == pod_b_checkpoint, \
        "pod A's exit cleared the pointer to pod B's newer checkpoint"
    assert not pod_a.event("latest.cleared"), "the log says cleared; the store says otherwise"
    [skipped] = pod_a.event("latest.clear_skipped")
    assert pod_b_checkpoint in str(skipped)


def test_after_the_lean_re_exec_a_pod_loses_the_race_instead_of_overwriting_a_newer_pointer(
        tmp_path, s3_env, monkeypatch):
    """What crosses the exec is the pointer as the pod found it: its commit is conditional on
    that, so pod B's newer checkpoint stays latest and pod A's stays aside."""
    from crikpy.app import Handover
    from crikpy.errors import RaceLost
    from crikpy.parts import LazyRepository
    from crikpy.settings import Settings

    url = _store_url("s3", tmp_path)
    at_start = CheckpointRepository(open_store(url), "app")
    assert at_start.latest_id() is None
    handover = Handover(pid=1, command=["app"], sigterm_at=None, owner=at_start.owner,
                        pointer=at_start.known, criu_version="4.2.1")
    for key, value in handover.to_env().items():
        monkeypatch.setenv(key, value)
    taken = Handover.take()
    assert taken == handover
    pod_b_checkpoint = _pod_b_commits(url, tmp_path)
    settings = Settings(name="app", store=url, work_dir=tmp_path / "w")
    lean = LazyRepository(settings, taken.owner, taken.pointer)
    with pytest.raises(RaceLost):
        lean.commit(staged(tmp_path), new_id(), sample_info())
    assert CheckpointRepository(open_store(url), "app").latest_id() == pod_b_checkpoint
