"""Fixtures for the end-to-end tests: images built from this checkout, containers cleaned up."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e import podman

CRIKPY_IMAGE = "localhost/crikpy:test"
COUNTER_IMAGE = "localhost/crikpy-counter:test"
STATEFUL_IMAGE = "localhost/crikpy-stateful:test"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing; run the tests through `bash tests/run.sh`, which installs it")
    podman.build(CRIKPY_IMAGE, podman.REPO)
    for tag, folder in ((COUNTER_IMAGE, "counter"), (STATEFUL_IMAGE, "stateful")):
        podman.build(tag, podman.REPO / "images" / folder, {"CRIKPY_IMAGE": CRIKPY_IMAGE})
    return {"counter": COUNTER_IMAGE, "stateful": STATEFUL_IMAGE, "crikpy": CRIKPY_IMAGE}


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
