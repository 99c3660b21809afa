"""The compatibility matrix, language runtimes (docs/workloads.md).

Like tests/e2e/test_matrix.py: each workload runs from images/matrix and is migrated three times,
its state checked in every container from what it prints or serves. Where the runtime's defaults
cannot be checkpointed, a test shows crikpy's refusal and what the setting that fixes it does.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request

import pytest

from tests.e2e.evidence import generations, processes
from tests.e2e.podman import Container, events
from tests.helpers import can_connect, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.matrix]

HEAP_COUNTER = "/opt/matrix/HeapCounter.java"
# -XX:-UsePerfData: this test is about the heap, threads and JIT; the perf data file the JVM
# makes in /tmp is test_jvm_with_its_perf_data_file_migrates's. The CompileCommands print when
# the JIT compiles HeapCounter.mix, and nothing else.
JAVA = ["java", "-XX:-UsePerfData", "-XX:CompileCommand=quiet",
        "-XX:CompileCommand=PrintCompilation,HeapCounter::mix", HEAP_COUNTER]
JVM_LINE = re.compile(r"jvm size=(\d+) sum=(\d+) workers=([\d,]+) cpus=(\d+) gc=(\S+)")


def _mix(i: int) -> int:
    """HeapCounter.mix: a 64-bit multiply, then the top 24 bits."""
    return (i * 0x9E3779B97F4A7C15) % 2**64 >> 40


def _jvm_lines(c: Container) -> list[dict]:
    found = []
    for line in c.lines("jvm size="):
        size, total, workers, cpus, gc = JVM_LINE.fullmatch(line).groups()
        found.append({"size": int(size), "sum": int(total), "cpus": int(cpus), "gc": gc,
                      "workers": [int(n) for n in workers.split(",")]})
    return found


def _mix_compiled_at(c: Container) -> list[int]:
    """The tiers at which this container's JVM compiled HeapCounter.mix (PrintCompilation's
    lines: timestamp, compile id, flags, tier, method)."""
    tiers = []
    for line in c.logs().splitlines():
        words = line.split()
        if "HeapCounter::mix" in words:
            tiers.append(int(words[words.index("HeapCounter::mix") - 1]))
    return tiers


def _threads(c: Container, pid: int) -> dict[int, str]:
    """The threads of process `pid` in `c`, thread id to name."""
    script = ("import json, os\n"
              f"tasks = '/proc/{pid}/task'\n"
              "print(json.dumps({t: open(f'{tasks}/{t}/comm').read().strip()"
              " for t in os.listdir(tasks)}))\n")
    return {int(t): name for t, name in json.loads(c.exec("python3", "-c", script)).items()}


def _first_with(containers, extra: list[str]):
    """`containers`, adding podman flags `extra` to the first container only."""
    started = []

    def start(image: str, **kwargs) -> Container:
        if not started:
            kwargs["extra"] = extra
        started.append(image)
        return containers(image, **kwargs)
    return start


def test_jvm_heap_threads_and_jit_carry_on(images, containers, volume):
    """A map in the heap, filled by 4 named worker threads, carries on through three
    migrations: every line's checksum matches the map's size, and neither size nor any worker's
    count ever goes back. The JVM's own threads keep their ids, and the JIT-compiled mix is
    never compiled again. The first container has 1 CPU, the next ones all of the machine's:
    availableProcessors() follows the container, but the collector chosen at start stays."""
    seen: dict = {}

    def check(c: Container, generation: int) -> None:
        c.wait_for(lambda _: len(c.lines("jvm size=")) >= 12, what="12 lines from the JVM")
        if generation == 0:
            c.wait_for(lambda _: 4 in _mix_compiled_at(c), what="C2 compiling HeapCounter.mix")
        else:
            assert _mix_compiled_at(c) == [], \
                f"generation {generation}: HeapCounter.mix was compiled again"
        java = [p for p, cmd in processes(c).items() if cmd.startswith("java ")]
        assert len(java) == 1, processes(c)
        threads = _threads(c, java[0])
        workers = {tid: name for tid, name in threads.items() if name.startswith("worker-")}
        assert sorted(workers.values()) == [f"worker-{k}" for k in range(4)], threads
        assert len(threads) >= 15, f"fewer JVM threads than expected: {threads}"
        if generation:
            assert java[0] == seen["pid"], "the JVM was restarted, not restored"
            lost = set(seen["threads"].items()) - set(threads.items())
            assert not lost, f"generation {generation}: threads gone or replaced: {lost}"
        seen.update(pid=java[0], threads=threads)

    gens = generations(images, _first_with(containers, ["--cpus", "1"]), volume, "jvm", JAVA,
                        check)

    sums = [0]  # sums[n]: the checksum of a map of size n
    previous = None
    for generation, c in enumerate(gens):
        lines = _jvm_lines(c)
        assert lines[-1]["size"] > lines[0]["size"], f"generation {generation} did not work on"
        for line in lines:
            while len(sums) <= line["size"]:
                sums.append(sums[-1] + _mix(len(sums) - 1))
            assert line["sum"] == sums[line["size"]], f"the map's contents are wrong: {line}"
            assert sum(line["workers"]) == line["size"], line
            if previous is not None:
                assert line["size"] >= previous["size"] and all(
                    now >= before for now, before in zip(line["workers"], previous["workers"])), \
                    f"generation {generation} went back: {previous} then {line}"
            previous = line
        assert {line["cpus"] for line in lines} == {1 if generation == 0 else os.cpu_count()}
    assert {line["gc"] for c in gens for line in _jvm_lines(c)} == {"Copy,MarkSweepCompact"}, \
        "the JVM chose the serial collector for 1 CPU, and should keep it"


def test_jvm_with_its_perf_data_file_migrates(images, containers, volume):
    """With its defaults the JVM maps /tmp/hsperfdata_root/<pid>, a file it makes at start. It
    is one of the container's changes, so it comes back with the checkpoint and the JVM
    migrates with no flag and no additional path (before, crikpy had to refuse it)."""
    command = ["java", HEAP_COUNTER]
    env = {"CRIKPY_NAME": "jvm-perf-data"}
    first = containers(images["matrix"], volume=volume, command=command, env=env)
    first.wait_for(lambda _: len(first.lines("jvm size=")) >= 4, what="the JVM working")
    assert first.stop() == 0 and events(first.logs(), "checkpoint.committed"), first.logs()[-3000:]
    second = containers(images["matrix"], volume=volume, command=command, env=env)
    second.wait_for(lambda _: len(second.lines("jvm size=")) >= 4, what="the JVM working again")
    assert events(second.logs(), "restore.done"), second.logs()[-3000:]
    before, after = _jvm_lines(first)[-1], _jvm_lines(second)[0]
    assert after["size"] >= before["size"] > 0, (before, after)
    assert second.exec("sh", "-c", "ls /tmp/hsperfdata_root").split()  # jps and jstat see it


NODE = ["node", "/opt/matrix/kv-server.js"]
# Denies io_uring_setup to node, which libuv then does without (images/matrix/no-io-uring.py).
NO_IO_URING = ["python3", "/opt/matrix/no-io-uring.py"]


def _state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return json.load(resp)


def _put(port: int, key: str, value: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/kv/{key}", data=value.encode(),
                                 method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return json.load(resp)


def test_node_http_server_state_answers_after_each_migration(images, containers, volume):
    """With io_uring denied to it, a Node.js server's in-memory map, request counter and timer
    answer after every migration exactly as they were before it, from the same process."""
    port = free_port()
    seen: dict = {}

    def check(c: Container, generation: int) -> None:
        c.wait_for(lambda _: can_connect(port), what="node listening")
        state = _state(port)
        if generation == 0:
            assert state["values"] == {} and state["requests"] == 1, state
        else:
            assert state["pid"] == seen["pid"], "node was restarted, not restored"
            assert state["values"] == seen["values"], f"generation {generation}: {state}"
            assert state["requests"] == seen["requests"] + 1, (seen, state)
            assert state["ticks"] >= seen["ticks"], (seen, state)
        assert _put(port, f"k{generation}", f"value {generation}") == {"stored": generation + 1}
        seen.update(_state(port))
        assert seen["values"][f"k{generation}"] == f"value {generation}", seen

    generations(images, containers, volume, "node", [*NO_IO_URING, *NODE], check,
                 env={"PORT": str(port)})
    assert seen["values"] == {f"k{g}": f"value {g}" for g in range(4)}, seen


@pytest.mark.parametrize("env", [{}, {"UV_USE_IO_URING": "0"}],
                         ids=["default", "UV_USE_IO_URING=0"])
def test_node_io_uring_is_refused_cleanly(images, containers, volume, env):
    """libuv 1.49+ makes an io_uring for every event loop whenever the kernel allows it (here,
    in a privileged container), UV_USE_IO_URING=0 or not, and CRIU cannot dump one: crikpy
    refuses the checkpoint, naming the process and the fixes, and node gets its SIGTERM."""
    port = free_port()
    c = containers(images["matrix"], volume=volume, command=NODE,
                   env={"CRIKPY_NAME": "node", "PORT": str(port), **env})
    c.wait_for(lambda _: can_connect(port), what="node listening")
    assert _put(port, "k", "v") == {"stored": 1}
    assert c.stop() == 143, "node did not get its SIGTERM"
    logs = c.logs()
    failed = events(logs, "checkpoint.failed")
    assert len(failed) == 1 and re.match(
        r"process \d+ \(node\) has an io_uring instance, which CRIU cannot dump\. Deny io_uring "
        r"to the workload: a seccomp filter", failed[0]["error"]), failed
    assert "UV_USE_IO_URING=0 does not stop that" in failed[0]["error"], failed
    assert [e["signal"] for e in events(logs, "signal.forwarded")] == ["SIGTERM"]
    assert not events(logs, "checkpoint.committed")
