"""End to end: a crik user changes only the binary's name, and a workload migrates.

crik's example configuration (crik-config.yaml, unchanged) is mounted where crik reads it,
/etc/crik/config.yaml; the checkpoint volume is mounted at its imageDir; the pod has crik's
KUBERNETES_NODE_NAME and a StatefulSet pod's hostname, and no CRIKPY_* variable. The command
line is crik's with the name changed: `crikpy --debug run bash -c ...`, crik's example loop, which
also keeps a file in an additionalPaths directory open. crik's node-state server is
tests/nodestate/fakes.py, answering at the very address in crik's README: its host name resolves
to 127.0.0.1 in the container, and the fake is served on crik's port, 9376.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from tests.e2e.podman import events, numbers, podman
from tests.nodestate.fakes import FakeNodeState

pytestmark = pytest.mark.e2e
CONFIG = Path(__file__).with_name("crik-config.yaml")
SERVER_HOST, SERVER_PORT = "crik-node-state-server.default.svc.cluster.local", 9376
# crik's examples/simple-loop.yaml, plus what the config's paths stand for: a cache file kept
# open (additionalPaths) and a settings file that breaks CRIU's inotify dumps (deleted first).
LOOP = ("mkdir -p /root/.cache /root/.config/glib-2.0\n"
        "echo '[org]' > /root/.config/glib-2.0/settings\n"
        "exec 3>>/root/.cache/counts\n"
        "for ((i=0; ; i++)); do echo \"Count is at $i\"; echo $i >&3; sleep 0.2; done")


@pytest.fixture
def node_state_server():
    """The fake, also on crik's port: crik's README gives nodeStateServerURL with port 9376."""
    fake = FakeNodeState()
    on_crik_port = http.server.ThreadingHTTPServer(("127.0.0.1", SERVER_PORT),
                                                 fake._server.RequestHandlerClass)
    threading.Thread(target=on_crik_port.serve_forever, daemon=True).start()
    yield fake
    on_crik_port.shutdown()
    on_crik_port.server_close()
    fake.close()


def _counts(c) -> list[int]:
    return numbers(c.lines("Count is at "), r"^Count is at (\d+)$")


def _pod(images, containers, volume):
    """One generation of crik's simple-loop StatefulSet pod, run by crikpy."""
    return containers(
        images["crikpy"], volume=None, env={"KUBERNETES_NODE_NAME": "node-a"},
        extra=["-v", f"{volume}:/etc/checkpoint", "-v", f"{CONFIG}:/etc/crik/config.yaml:ro",
               "--hostname", "simple-loop-0", "--add-host", f"{SERVER_HOST}:127.0.0.1",
               "--entrypoint", json.dumps(["crikpy", "--debug", "run"])],
        command=["bash", "-c", LOOP])


def test_crik_example_configuration_migrates_a_workload(images, containers, volume,
                                                        node_state_server):
    fake = node_state_server
    fake.crik_state = "shutting-down"  # the node is being drained
    first = _pod(images, containers, volume)
    first.wait_for(lambda _: len(_counts(first)) >= 5, what="five counts")
    assert first.stop() == 0
    logs = first.logs()
    assert [e["path"] for e in events(logs, "config.read")] == ["/etc/crik/config.yaml"]
    assert events(logs, "config.resolved")[0]["store"] == "file:///etc/checkpoint"  # --debug
    decision = events(logs, "checkpoint.decision")[0]
    assert (decision["checkpoint"], decision["source"]) == (True, "crik")
    assert "GET /v1/nodes/node-a" in fake.requests
    assert events(logs, "checkpoint.committed")
    # The checkpoint is on the volume, under the pod's name.
    assert list((volume / "simple-loop-0" / "checkpoints").iterdir())
    # inotifyIncompatiblePaths were deleted before the dump, as crik does.
    diff = json.loads(podman("diff", "--format", "json", first.name).stdout)
    assert "/usr/share/zoneinfo" in diff.get("deleted", [])
    assert "/root/.config/glib-2.0/settings" not in diff.get("added", [])

    # The next pod, on another node: the loop goes on, and so does its open cache file.
    second = _pod(images, containers, volume)
    second.wait_for(lambda _: len(_counts(second)) >= 3, what="the restored loop")
    assert _counts(second)[0] == _counts(first)[-1] + 1, "the loop did not carry on"
    assert events(second.logs(), "restore.done")
    cache = [int(n) for n in second.exec("cat", "/root/.cache/counts").split()]
    assert cache == list(range(len(cache))) and cache[-1] >= _counts(second)[0]

    # A rollout: the node stays, so SIGTERM stops the loop and nothing is kept to restore.
    fake.crik_state = "unknown"
    assert second.stop() == 128 + 15, "bash did not get its SIGTERM"
    logs = second.logs()
    assert events(logs, "checkpoint.decision")[0]["checkpoint"] is False
    assert not events(logs, "checkpoint.started") and events(logs, "latest.cleared")
