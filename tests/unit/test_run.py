"""`crikpy run` as PID 1 would be: real processes, real signals, exit codes, the latest pointer.

These run on the host, where no working CRIU is installed; that is what makes a checkpoint fail
here, which exercises the failure path (the workload gets SIGTERM and shuts down as usual).
The CRIU paths themselves are covered end to end in tests/e2e.
"""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.stores import open_store
from tests.helpers import WORKLOAD, Run, sample_info

def test_exit_code_is_the_workloads(tmp_path):
    code, _ = Run(tmp_path, "sh", "-c", "exit 7").finish()
    assert code == 7


def test_killed_by_signal_gives_128_plus_n(tmp_path):
    code, _ = Run(tmp_path, "sh", "-c", "kill -9 $$").finish()
    assert code == 128 + 9


def test_signals_are_forwarded_to_the_workload(tmp_path):
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD)
    assert run.readline().startswith("ready")
    for sig in (signal.SIGUSR1, signal.SIGHUP):
        run.proc.send_signal(sig)
        assert run.readline() == f"got {sig.name}"
    run.proc.send_signal(signal.SIGINT)
    code, out = run.finish()
    assert out.strip() == "got SIGINT" and code == 42


def test_orphaned_grandchildren_are_reaped(tmp_path):
    # The workload's child forks a grandchild and exits at once; the grandchild, orphaned,
    # is adopted by crikpy (subreaper), exits, and must not linger as a zombie.
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        print(os.getpid(), flush=True); time.sleep(1); os._exit(0)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "time.sleep(60)\n"
    )
    run = Run(tmp_path, sys.executable, "-c", script)
    grandchild = int(run.readline())
    crikpy_pid = run.proc.pid
    time.sleep(0.3)
    status = Path(f"/proc/{grandchild}/status").read_text()
    adopted_by = int(status.split("PPid:")[1].split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{grandchild}").exists():
        time.sleep(0.05)
    lingering = Path(f"/proc/{grandchild}").exists()
    run.proc.send_signal(signal.SIGTERM)
    run.finish()
    assert adopted_by == crikpy_pid, "crikpy did not adopt the orphan (no subreaper flag)"
    assert not lingering, f"grandchild {grandchild} of crikpy {crikpy_pid} was never reaped"


@pytest.mark.parametrize("after, cleared", [([], True), (["--after-failed-checkpoint", "keep"], False)])
def test_failed_checkpoint_passes_sigterm_on(tmp_path, after, cleared):
    store = open_store(f"file://{tmp_path / 'store'}")
    CheckpointRepository(store, "app").clear_latest(reason="seed")  # pointer exists, names none
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD, extra=["--log-level", "info", *after])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert out.strip() == "got SIGTERM" and code == 0
    assert run.event("checkpoint.failed")
    # The workload shut down from a state newer than any checkpoint: by default, no rewind
    # (here the pointer names none already, and the log says so).
    assert bool(_clear_tried(run)) == cleared


def _clear_tried(run: Run) -> bool:
    """Whether crikpy cleared the pointer, or found it naming no checkpoint already."""
    skipped = [e for e in run.event("latest.clear_skipped") if e["why"] == "already clear"]
    return bool(run.event("latest.cleared") or skipped)


def test_natural_exit_clears_latest(tmp_path):
    run = Run(tmp_path, "true")
    assert run.finish()[0] == 0
    assert _clear_tried(run)


def test_missing_criu_keeps_the_checkpoint_and_fails_clearly(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    ckpt_id = new_id()
    staging = tmp_path / "staging" / "images"
    staging.mkdir(parents=True)
    (staging / "pages-1.img").write_bytes(b"x")
    CheckpointRepository(store, "app").commit(staging.parent, ckpt_id, sample_info())

    run = Run(tmp_path, "true", extra=["--additional-path", "/nonexistent"])
    code, _ = run.finish()
    if run.event("restore.done"):
        pytest.fail("a fake checkpoint was restored")
    assert code == 178, run.stderr  # this node's fault: no CRIU here
    assert "crikpy: error:" in run.stderr and "criu" in run.stderr.lower()
    assert CheckpointRepository(store, "app").latest_id() == ckpt_id


def test_command_not_found_is_127(tmp_path):
    code, _ = Run(tmp_path, "/no/such/program").finish()
    assert code == 127


@pytest.fixture
def node_state():
    from tests.nodestate.fakes import FakeNodeState

    fake = FakeNodeState()
    yield fake
    fake.close()


def node_shutdown(fake) -> list[str]:
    return ["--checkpoint-on", "node-shutdown", "--node-state-sources", "crik",
            "--node-name", "node-a", "--node-state-timeout", "5"]


@pytest.mark.parametrize("crik_state, checkpoint", [("unknown", False), ("shutting-down", True)])
def test_node_shutdown_asks_the_node_state_on_sigterm(tmp_path, node_state, crik_state,
                                                      checkpoint):
    node_state.crik_state = crik_state
    config = tmp_path / "config.yaml"
    config.write_text(f"nodeStateServerURL: {node_state.url}\n")
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
              extra=[*node_shutdown(node_state), "--config", str(config)])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert out.strip() == "got SIGTERM" and code == 0  # shut down normally either way here
    [decision] = run.event("checkpoint.decision")
    assert (decision["checkpoint"], decision["source"]) == (checkpoint, "crik")
    if checkpoint:  # attempted; there is no CRIU on this host, so it fails: no rewind later
        assert run.event("checkpoint.started") and run.event("checkpoint.failed")
        assert _clear_tried(run)
    else:  # a rollout or scale-down: no checkpoint, and the old one is stale
        assert not run.event("checkpoint.started")
        assert _clear_tried(run)


def test_checkpoint_on_never_is_plain_init(tmp_path):
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD, extra=["--checkpoint-on", "never"])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 0
    assert run.event("checkpoint.decision")[0]["reason"] == "checkpoint-on never"
    assert not run.event("checkpoint.started")


def test_with_an_s3_store_pid_1_re_execs_lean_and_goes_on_supervising(tmp_path, s3_server):
    """boto3 loaded for the start is shed by re-exec; signals, exit codes and the store still work."""
    from tests.harness.s3server import BUCKET

    env_backup = dict(os.environ)
    os.environ.update(s3_server.env)
    try:
        run = Run(tmp_path, sys.executable, "-c", WORKLOAD,
                  extra=["--store", f"s3://{BUCKET}/lean-{os.getpid()}", "--s3-path-style"])
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    assert run.readline().startswith("ready")
    time.sleep(1.0)  # the re-exec happens right after the start
    run.proc.send_signal(signal.SIGUSR1)
    assert run.readline() == "got SIGUSR1", "signals stopped reaching the workload"
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert out.strip() == "got SIGTERM" and code == 0
    [lean] = run.event("crikpy.lean")
    assert run.event("checkpoint.failed")  # no CRIU on this host; the store opened lazily
    assert _clear_tried(run), "the store could not be used after the re-exec"
    assert len(run.event("crikpy.started")) == 1
