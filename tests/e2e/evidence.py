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


MIGRATIONS = 3  # the compatibility matrix's: tests/e2e/test_matrix.py


def processes(c: Container) -> dict[int, str]:
    """The container's processes, PID to command line, as seen inside it."""
    script = ("import json, os\n"
              "out = {}\n"
              "for p in os.listdir('/proc'):\n"
              "    try: out[p] = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ')"
              ".decode().strip()\n"
              "    except (OSError, NotADirectoryError): pass\n"
              "print(json.dumps({p: c for p, c in out.items() if p.isdigit()}))\n")
    return {int(p): cmd for p, cmd in json.loads(c.exec("python3", "-c", script)).items()}


def generations(images, containers, volume, name: str, command: list[str], check,
                 env: dict[str, str] | None = None) -> list[Container]:
    """Run `command` cold, then migrate it MIGRATIONS times. `check(c, generation)` proves the
    state in container `c` (waiting for output as it needs) before it is stopped. Returns the
    stopped containers, oldest first, whose logs hold everything the workload printed."""
    done = []
    for generation in range(MIGRATIONS + 1):
        c = containers(images["matrix"], volume=volume, command=command,
                       env={"CRIKPY_NAME": name, **(env or {})})
        if generation:
            c.wait_for(lambda text: any(events(text, e) for e in ("restore.done", "restore.skipped",
                                                                  "restore.failed")),
                       what="the restore")
            assert events(c.logs(), "restore.done"), \
                f"generation {generation} did not restore: {c.logs()[-3000:]}"
        check(c, generation)
        assert c.stop() == 0, c.logs()[-3000:]
        assert len(events(c.logs(), "checkpoint.committed")) == 1, c.logs()[-3000:]
        done.append(c)
    return done
