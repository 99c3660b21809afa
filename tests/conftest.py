"""Fixtures shared by all tests: the real S3-compatible server (SeaweedFS) on 127.0.0.1, and the
HTTP server that answers like the node-state sources (tests/nodestate/fakes.py)."""

from __future__ import annotations

import pytest

from tests.harness.s3server import S3Server
from tests.nodestate.fakes import FakeNodeState


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except (RuntimeError, FileNotFoundError) as e:
        pytest.fail(f"SeaweedFS would not start ({e}); run the tests through `bash tests/run.sh`, "
                    "which installs it")
    yield server
    server.stop()


@pytest.fixture
def fake():
    """A fresh fake Kubernetes API / crik / cloud-metadata server for one test."""
    f = FakeNodeState()
    yield f
    f.close()
