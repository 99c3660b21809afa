"""Fixtures shared by all tests: the real S3-compatible server (SeaweedFS) on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.harness.s3server import S3Server


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
