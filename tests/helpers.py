"""What more than one test module uses: a sample workload description, a staging tree, the
`crikpy` command run as a subprocess (once, or as PID 1 would be), a stand-in for CRIU's restore,
free ports, HTTP servers in a thread, and the kustomize rendering of manifests/examples.

Test modules import from here (and from tests/harness, tests/nodestate/fakes.py,
tests/s3/faultproxy.py, tests/e2e/podman.py and tests/e2e/evidence.py), never from each other."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import yaml

from crikpy.checkpoint.manifest import WorkloadInfo, new_id
from crikpy.errors import CorruptCheckpoint, NodeFault

ROOT = Path(__file__).resolve().parents[1]


# -- checkpoints ------------------------------------------------------------------------------

def sample_describe(**overrides) -> dict:
    """A sample workload's fields, as a manifest's JSON holds them, `overrides` applied."""
    return dict(dict(name="app", created_at="2026-11-22T10:00:00+00:00", command=["app"],
                     root_pid=9001, stdio={}, additional_paths=[], criu_version="4.2.1",
                     kernel="6.18", hostname="node", dump_seconds=0.1), **overrides)


def sample_info(**overrides) -> WorkloadInfo:
    """A sample of what a checkpoint is of, `overrides` applied: what commit() takes."""
    return WorkloadInfo(**sample_describe(**overrides))


def staged(tmp_path: Path, content: bytes = b"pages" * 1000) -> Path:
    """A staging tree as a dump leaves it: CRIU's images and one additional path."""
    root = tmp_path / f"staging-{new_id()}"
    (root / "images").mkdir(parents=True)
    (root / "images" / "pages-1.img").write_bytes(content)
    (root / "images" / "dump.log").write_text("log")
    (root / "extra" / "data").mkdir(parents=True)
    (root / "extra" / "data" / "journal").write_text("tick 1\n")
    return root


class FakeMigrator:
    """Stands in for CRIU: each restore raises the next queued error, or returns a PID. As in
    Migrator.restore, a node fault found up front or a checkpoint that does not verify fails
    before `before_criu`; anything else comes from CRIU, after it."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.restored: list[str] = []

    def restore(self, manifest, before_criu=lambda: None):
        self.restored.append(manifest.id)
        outcome = self.outcomes.pop(0)
        if not isinstance(outcome, (NodeFault, CorruptCheckpoint)):
            before_criu()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


# -- the crikpy command -----------------------------------------------------------------------

def crikpy(*args, env=None):
    """`python -m crikpy ARGS`, without the CRIKPY_* variables of the environment the tests run in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}
    return subprocess.run([sys.executable, "-m", "crikpy", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=60)


WORKLOAD = r"""
import os, signal, sys, time
def on(sig, _):
    print("got", signal.Signals(sig).name, flush=True)
    if sig == signal.SIGINT:
        sys.exit(42)
for s in (signal.SIGUSR1, signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(s, on if s != signal.SIGTERM else lambda *_: (print("got SIGTERM", flush=True), sys.exit(0)))
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


class Run:
    """`crikpy run` as PID 1 would run it, on a file store under `tmp_path`."""

    def __init__(self, tmp_path: Path, *command: str, name: str = "app", extra=(), wrap=()):
        """`wrap`: a command that runs crikpy (`unshare ...`, `setpriv ...`), as a container would."""
        self.store = tmp_path / "store"
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "crikpy", "run", "--store", f"file://{self.store}",
             "--name", name, "--work-dir", str(tmp_path / "work"), "--pid-floor", "0",
             *extra, "--", *command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")},
        )

    def readline(self) -> str:
        return self.proc.stdout.readline().strip()

    def finish(self, timeout=30):
        out, err = self.proc.communicate(timeout=timeout)
        self.events = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
        self.stderr = err
        return self.proc.returncode, out

    def event(self, name):
        return [e for e in self.events if e["event"] == name]


# -- the network ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def serve(server: socketserver.BaseServer) -> None:
    """Serve in a daemon thread. `server.shutdown()` then returns within 10 ms, not the 0.5 s
    of serve_forever's default poll interval."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()


def s3_env(endpoint: str, server) -> dict[str, str]:
    """The environment of a crikpy on its own prefix of the test's S3 server, reached at `endpoint`."""
    from tests.harness.s3server import BUCKET  # noqa: PLC0415  (the harness imports free_port)

    return {**server.env, "AWS_ENDPOINT_URL": endpoint,
            "CRIKPY_STORE": f"s3://{BUCKET}/e2e-{uuid.uuid4().hex[:8]}",
            "CRIKPY_S3_PATH_STYLE": "true"}


# -- manifests/ -------------------------------------------------------------------------------

EXAMPLES = ROOT / "manifests" / "examples"
KUBECTL = Path(sys.executable).parent / "kubectl"  # tests/harness/setup.sh puts it there
OVERLAYS = sorted(p.parent.name for p in EXAMPLES.glob("*/kustomization.yaml"))


def render(path: Path) -> list[dict]:
    """`kubectl kustomize PATH`, parsed."""
    proc = subprocess.run([str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
