"""Fixtures for the end-to-end tests: images built from this checkout, containers cleaned up."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.e2e import podman
from tests.e2e.kubelet import counter, kubelet_of  # noqa: F401  (fixtures of the pod tests)

# Another tag keeps a second checkout's images apart from these (two runs at once on one machine).
TAG = os.environ.get("CRIKPY_TEST_TAG", "test")


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing; run the tests through `bash tests/run.sh`, which installs it")
    podman.build_images(TAG)
    return {"crikpy": f"localhost/crikpy:{TAG}", "counter": f"localhost/crikpy-counter:{TAG}",
            "stateful": f"localhost/crikpy-stateful:{TAG}", "matrix": f"localhost/crikpy-matrix:{TAG}"}


@pytest.fixture
def containers():
    """Start containers with `containers(image, ...)`; all are removed after the test."""
    started: list[podman.Container] = []

    def start(image: str, **kwargs) -> podman.Container:
        c = podman.Container(image, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.remove()


@pytest.fixture
def volume(tmp_path):
    """A checkpoint volume shared by the containers of one test, like a pod's PVC."""
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path
