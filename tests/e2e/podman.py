"""Real containers for the end-to-end tests: build images and run privileged containers.

The flags are the ones measured to work on these machines (docs/testing.md says why): runc
instead of crun, explicit ulimits (no CAP_SYS_RESOURCE here), host networking so a test can
reach a container's server on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ["--runtime", "runc"]
UNPRIVILEGED_FLAGS = [*RUNTIME, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000",
                      "--network", "host"]
RUN_FLAGS = [*UNPRIVILEGED_FLAGS, "--privileged"]
CHECKPOINT_DIR = "/var/lib/crikpy/checkpoints"


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def build_images(tag: str) -> None:
    """crikpy's image and the examples, from this checkout (tests/harness/build-images.sh)."""
    proc = subprocess.run(["bash", str(REPO / "tests/harness/build-images.sh"), tag],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"building images failed:\n{proc.stdout}\n{proc.stderr}")


class Container:
    """One `podman run -d` container; the test's process tree lives in it."""

    def __init__(self, image: str, *, volume: Path | None = None, env: dict[str, str] | None = None,
                 command: list[str] | None = None, extra: list[str] | None = None,
                 privileged: bool = True, security: list[str] | None = None) -> None:
        """`security`, when given, replaces --privileged: podman's security flags of the test's
        own (capabilities, seccomp, mounts), added to the unprivileged base flags."""
        self.name = f"crikpy-test-{uuid.uuid4().hex[:10]}"
        if security is not None:
            flags = [*UNPRIVILEGED_FLAGS, *security]
        else:
            flags = RUN_FLAGS if privileged else UNPRIVILEGED_FLAGS
        args = ["run", "-d", *flags, "--name", self.name]
        if volume is not None:
            args += ["-v", f"{volume}:{CHECKPOINT_DIR}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        podman(*args, *(extra or []), image, *(command or []))

    def logs(self) -> str:
        proc = podman("logs", self.name)
        return proc.stdout + proc.stderr

    def lines(self, prefix: str) -> list[str]:
        return [ln for ln in self.logs().splitlines() if ln.startswith(prefix)]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logs()
            if predicate(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"{self.name}: timed out waiting for {what or predicate}; "
                             f"logs:\n{self.logs()[-4000:]}")

    def stop(self, timeout: int = 60) -> int:
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return self.exit_code()

    def wait(self, timeout: float = 120) -> int:
        podman("wait", self.name, timeout=timeout)
        return self.exit_code()

    def exit_code(self) -> int:
        return int(podman("inspect", self.name, "--format", "{{.State.ExitCode}}").stdout)

    def kill(self, signal: str) -> None:
        podman("kill", "-s", signal, self.name)

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def events(logs: str, name: str) -> list[dict]:
    """crikpy's structured log events called `name`, parsed."""
    import json

    found = []
    for line in logs.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def numbers(lines: list[str], pattern: str) -> list[int]:
    return [int(m.group(1)) for ln in lines if (m := re.search(pattern, ln))]
