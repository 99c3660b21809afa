"""The file:// store's own behaviour, where it differs from what every store promises."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from crikpy import budget
from crikpy.errors import StoreError
from crikpy.stores import open_store


@pytest.fixture
def held_lock(tmp_path):
    """The store's `.lock`, held by another process (another pod's crikpy, hung)."""
    (tmp_path / "store").mkdir(mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(tmp_path / 'store' / '.lock')!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield tmp_path / "store"
    holder.kill()
    holder.wait()


def test_a_held_lock_without_a_deadline_fails_within_the_store_call_bound(held_lock,
                                                                          monkeypatch):
    monkeypatch.setattr(budget, "STORE_CALL_SECONDS", 1.0)  # the bound, short for a test
    store = open_store(f"file://{held_lock}")
    outcome: dict = {}

    def write() -> None:
        try:
            store.put_bytes("ns/app/latest.json", b"{}", if_absent=True)
        except BaseException as e:  # noqa: BLE001  (asserted below)
            outcome["error"] = e
    writer = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    writer.start()
    writer.join(budget.STORE_CALL_SECONDS + 5)
    assert not writer.is_alive(), "put_bytes still waits for the lock"
    assert time.monotonic() - started >= budget.STORE_CALL_SECONDS - 0.1, "gave up too early"
    error = outcome.get("error")
    assert isinstance(error, StoreError), outcome
    assert str(held_lock / ".lock") in str(error) and "another" in str(error)
    assert not (held_lock / "ns" / "app" / "latest.json").exists()
