"""Nothing crikpy waits for may hold a start or a stop beyond its bounds, nor hide whose fault a
failure is (issue 18, found 3, 5, 6 and 7): a lock another pod holds, a CRIU that hangs, a race
lost to another pod, a store that cannot be opened in a helper thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.stores import open_store
from tests.helpers import WORKLOAD, Run, sample_info, staged

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}


def _hold_the_store_lock(store_dir) -> int:
    store_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(store_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_sigterm_stops_a_start_waiting_for_a_lock_another_pod_holds(tmp_path):
    """The start's records (attempt counts, quarantine, the pointer) wait for the store's lock;
    a SIGTERM meanwhile ends the start at once, with nothing lost."""
    store = open_store(f"file://{tmp_path / 'store'}")
    kept = CheckpointRepository(store, "app").commit(staged(tmp_path), new_id(), sample_info()).id
    lock = _hold_the_store_lock(tmp_path / "store")
    try:
        run = Run(tmp_path, "true")  # no CRIU on this host: the restore fails, and is recorded
        time.sleep(3)  # the start is waiting for the lock by now
        run.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            run.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            raise AssertionError("the SIGTERM went unseen while the start waited for the lock")
        waited = time.monotonic() - sent
    finally:
        os.close(lock)
    code, _ = run.finish()
    assert code == 143, run.stderr
    assert waited < 10
    assert CheckpointRepository(store, "app").latest_id() == kept


def test_a_sigterm_while_crikpy_starts_up_counts_from_its_arrival(tmp_path):
    """A CRIU that hangs when asked what it supports must not hold PID 1 before its loop: the
    workload gets its SIGTERM within the grace period."""
    hanging = tmp_path / "criu"
    hanging.write_text("#!/bin/sh\nexec sleep 120\n")
    hanging.chmod(0o755)
    config = tmp_path / "crikpy.yaml"
    config.write_text(f"criuBinary: {hanging}\n")
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
              extra=["--config", str(config), "--checkpoint-interval", "600",
                     "--grace-period", "8"])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code, out = run.finish(timeout=60)
    finally:
        run.proc.kill()
    assert "got SIGTERM" in out and code == 0
    assert time.monotonic() - sent < 8, "the stop outlasted the grace period"


def test_a_release_that_loses_a_race_to_another_pod_says_so_with_its_own_code(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    repo = CheckpointRepository(store, "app")
    released = repo.commit(staged(tmp_path), new_id(), sample_info()).id
    repo.quarantine(released, "set aside for the test")
    lock = _hold_the_store_lock(tmp_path / "store")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crikpy", "checkpoints", "release", released, "--name", "app",
         "--store", f"file://{tmp_path / 'store'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
    time.sleep(3)  # release read the pointer and waits for the lock to move it
    newer = CheckpointRepository(open_store(f"file://{tmp_path / 'other'}"), "app").commit(
        staged(tmp_path), new_id(), sample_info()).id
    (tmp_path / "store" / "app" / "latest.json").write_text(json.dumps({"id": newer}))
    os.close(lock)  # another pod moved the pointer while holding it
    _, err = proc.communicate(timeout=60)
    from crikpy import errors

    assert proc.returncode != errors.INTERNAL_EXIT_CODE, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "another" in err, err


def test_a_store_that_cannot_be_opened_when_a_checkpoint_begins_is_one_logged_error(
        tmp_path, capfd):
    from crikpy.parts import LazyRepository
    from crikpy.errors import ConfigError
    from crikpy.settings import Settings
    from crikpy.stores import S3Options

    settings = Settings(name="app", store="s3://bucket/x", work_dir=tmp_path / "w",
                        s3=S3Options(credentials_file=str(tmp_path / "missing-credentials")))
    repo = LazyRepository(settings, owner="pod/1", known=None)
    repo.warm()
    time.sleep(2)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    try:
        repo.latest_id()
    except ConfigError as e:
        assert "missing-credentials" in str(e)
    else:
        raise AssertionError("a store that cannot be opened was used")
