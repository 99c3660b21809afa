"""A stop's bounds with real CRIU in podman (issue 18, found 4, 5 and 10): the pointer is right
even when the kubelet's SIGKILL comes, no CRIU call holds the frozen tree past the grace period,
and nothing but the commit itself happens while the tree is frozen.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.podman import CHECKPOINT_DIR, RUN_FLAGS, events, podman

pytestmark = pytest.mark.e2e

# Ignores SIGTERM, as a workload that uses its whole grace period to shut down does.
STUBBORN = ["sh", "-c", "trap '' TERM; i=0; while :; do echo \"tick $i\"; i=$((i+1)); "
                        "sleep 0.2; done"]


def _latest(image: str, volume, name: str) -> list[str]:
    out = podman("run", "--rm", *RUN_FLAGS, "-v", f"{volume}:{CHECKPOINT_DIR}",
                 "--entrypoint", "crikpy", image, "checkpoints", "list", "--json", "--name", name)
    return [c["id"] for c in json.loads(out.stdout) if c["latest"]]


def test_a_declined_stop_that_the_kubelet_kills_leaves_no_pointer_to_an_older_state(
        images, containers, volume):
    env = {"CRIKPY_NAME": "stubborn"}
    first = containers(images["counter"], volume=volume, env=env, command=STUBBORN)
    first.wait_for(lambda logs: "tick 3" in logs, what="three ticks")
    assert first.stop(timeout=30) == 0
    [committed] = [e["id"] for e in events(first.logs(), "checkpoint.committed")]

    second = containers(images["counter"], volume=volume,
                        env={**env, "CRIKPY_CHECKPOINT_ON": "never"}, command=STUBBORN)
    second.wait_for(lambda logs: events(logs, "restore.done"), what="the restore")
    assert second.stop(timeout=4) == 137  # the SIGTERM is forwarded, ignored; SIGKILL follows
    assert _latest(images["crikpy"], volume, "stubborn") == [], \
        f"the next pod would restore {committed}, from before this pod's run"


# Hangs whenever a process of the container is stopped: a CRIU asked anything while the
# workload's tree is frozen after its dump.
SLOW_WHILE_FROZEN = r"""
cat > /tmp/criu <<'EOF'
#!/bin/sh
if grep -qE '^State:[[:space:]]+[tT] ' /proc/[0-9]*/status 2>/dev/null; then exec sleep 600; fi
exec criu "$@"
EOF
chmod +x /tmp/criu
echo "criuBinary: /tmp/criu" > /tmp/crikpy.yaml
exec crikpy run --config /tmp/crikpy.yaml -- python3 /opt/counter/counter.py
"""


def test_no_criu_call_holds_the_frozen_tree_after_its_dump(images, containers, volume):
    c = containers(images["counter"], volume=volume,
                   env={"CRIKPY_NAME": "frozen-calls", "CRIKPY_GRACE_PERIOD": "20"},
                   extra=["--entrypoint", "sh"], command=["-c", SLOW_WHILE_FROZEN])
    c.wait_for(lambda logs: "count 3 " in logs, what="three counts")
    assert c.stop(timeout=20) == 0, c.logs()[-3000:]
    assert events(c.logs(), "checkpoint.committed")


def test_housekeeping_waits_until_the_frozen_tree_is_gone(images, containers, volume):
    env = {"CRIKPY_NAME": "tidy", "CRIKPY_KEEP_CHECKPOINTS": "1"}
    for generation in range(3):
        c = containers(images["counter"], volume=volume, env=env)
        c.wait_for(lambda logs: "count " in logs, what="a count")
        assert c.stop(timeout=30) == 0
    logs = c.logs()
    order = [e["event"] for e in (json.loads(line) for line in logs.splitlines()
                                  if line.startswith("{"))]
    assert "checkpoint.pruned" in order
    assert "workload.stopped" in order, "the end of the frozen tree is not logged"
    assert order.index("workload.stopped") < order.index("checkpoint.pruned"), \
        "retention ran while the workload was still frozen"
