"""Reading the example workloads' own output: what proves that a restore continued them."""

from __future__ import annotations

import importlib.util
import json
import urllib.request

from tests.e2e.podman import REPO, Container, events, numbers


def stateful_app():
    """images/stateful/app.py as a module, for `expected_digest`."""
    spec = importlib.util.spec_from_file_location("stateful_app", REPO / "images/stateful/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def states(container: Container) -> list[dict]:
    return [json.loads(ln.split(" ", 1)[1]) for ln in container.lines("stateful ")]


def counts(container: Container) -> list[int]:
    return numbers(container.lines("count "), r"^count (\d+)")


def check_stateful_generation(c: Container, previous: dict | None, port: int, mib: int) -> dict:
    """Assert that container `c` runs the stateful example on from `previous` (its last state
    before the checkpoint; None for the cold start). Returns the first state seen in `c`."""
    c.wait_for(lambda _: len(states(c)) >= 3, what="three ticks")
    first = states(c)[0]

    # The listening socket answers, from the same process that prints.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        served = json.load(resp)
    assert served["pid"] == first["pid"] and served["tick"] >= first["tick"]

    # Memory: the digest the process reports equals one rebuilt from scratch for that tick.
    assert first["digest"] == stateful_app().expected_digest("crikpy", mib, first["tick"])

    if previous is None:
        assert first["tick"] == 0
        return first
    assert first["tick"] == previous["tick"] + 1, "the workload did not carry on"
    assert first["pid"] == previous["pid"]
    assert first["children"].keys() == previous["children"].keys(), "children replaced"
    for pid, beat in first["children"].items():
        assert beat >= previous["children"][pid], f"child {pid} started over"
    assert first["journal_bytes"] > previous["journal_bytes"]
    assert events(c.logs(), "restore.done")
    return first


def check_journal(c: Container, up_to_tick: int) -> None:
    journal = c.exec("cat", "/var/lib/stateful/journal.log").splitlines()
    ticks = numbers(journal, r"^tick (\d+)$")
    assert ticks == list(range(len(ticks))), "journal lost or repeated a line"
    assert ticks[-1] >= up_to_tick
