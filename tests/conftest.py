"""Fixtures shared by all tests: the real S3-compatible server (SeaweedFS) and the real Kubernetes
control plane (tests/harness/kube.sh) on 127.0.0.1, and the HTTP server that answers like the
cloud metadata services (tests/nodestate/fakes.py)."""

from __future__ import annotations

import pytest

from tests.harness.kube import Cluster
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


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """etcd, kube-apiserver and kube-controller-manager, built from their Go modules (once)."""
    try:
        cluster = Cluster.up(tmp_path_factory.mktemp("kube"))
    except (RuntimeError, OSError) as e:
        pytest.fail(f"the Kubernetes control plane would not start: {e}")
    yield cluster
    cluster.down()


@pytest.fixture
def fake():
    """A fresh fake Kubernetes API / crik / cloud-metadata server for one test."""
    f = FakeNodeState()
    yield f
    f.close()
