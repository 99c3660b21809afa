"""One CRIU `swrk` RPC session: spawn criu, send one request, answer its notifications.

pycriu provides the protobuf messages; the session drives the socket itself because pycriu's
client neither answers NOTIFY messages nor lets extra fds (the stdio that a restore reattaches)
pass into CRIU. CRIU runs as a child of this process, so with `rst_sibling` the restored tree
becomes this process's child too.
"""

from __future__ import annotations

import select
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from crikpy import log, procs
from crikpy.errors import CrikpyError, CriuError, CriuUnavailable

if TYPE_CHECKING:
    from crikpy.deadline import Deadline

Notify = Callable[[str, int], bool]


def rpc():
    """pycriu's protobuf module, imported late so the rest of crikpy runs without CRIU installed."""
    try:
        import pycriu  # noqa: PLC0415
    except ImportError as e:
        raise CriuUnavailable(
            "pycriu (CRIU's Python bindings) is not installed; install criu and python3-pycriu "
            "4.2 or newer, or use the crikpy image"
        ) from e
    return pycriu.rpc


def images():
    """pycriu's image encoder/decoder, imported late like rpc()."""
    rpc()
    import pycriu  # noqa: PLC0415

    return pycriu.images


def call(req, *, criu_binary: str = "criu", pass_fds: Sequence[int] = (),
         on_notify: Notify | None = None, log_path: Path | None = None,
         deadline: "Deadline | None" = None):
    """Send `req` to a fresh `criu swrk` and return its final response.

    Raises CriuError naming CRIU's own error lines (from `log_path`) when it fails. When
    `deadline` passes first, CRIU is killed (a dumped tree is released by that: ptrace lets go)
    and CriuError says so.
    """
    pb = rpc()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [criu_binary, "swrk", str(theirs.fileno())],
            pass_fds=(theirs.fileno(), *pass_fds),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=procs.unblock_signals,
        )
    except OSError as e:
        raise CriuUnavailable(f"cannot run '{criu_binary}': {e.strerror}; install CRIU 4.2 or newer") from e
    theirs.close()
    op = pb.criu_req_type.Name(req.type).lower()
    try:
        ours.sendall(req.SerializeToString())
        while True:
            _wait_readable(ours, proc, deadline, op)
            resp = _receive(ours, pb)
            if resp is None:
                raise CriuError(f"criu {op} exited without answering{_stderr_hint(proc)}")
            if resp.type != pb.NOTIFY:
                break
            ok = on_notify(resp.notify.script, resp.notify.pid) if on_notify else True
            ours.sendall(pb.criu_req(type=pb.NOTIFY, notify_success=ok).SerializeToString())
    finally:
        ours.close()
        proc.wait()
    if not resp.success:
        raise CriuError(f"criu {op} failed{_log_hint(log_path, resp)}")
    return resp


def _wait_readable(sock: socket.socket, proc: subprocess.Popen, deadline, op: str) -> None:
    if deadline is None:
        return
    while not select.select([sock], [], [], max(0.0, min(deadline.remaining(), 0.5)))[0]:
        try:
            if deadline.remaining() <= 0:
                which = "the checkpoint deadline" if op == "dump" else "its deadline"
                raise CriuError(f"criu {op} did not finish before {which}; CRIU was stopped")
            deadline.check(f"criu {op}")  # a SIGTERM that stops this step
        except CrikpyError:
            proc.kill()
            raise


def _receive(sock: socket.socket, pb):
    # SOCK_SEQPACKET keeps message boundaries: peek at the size first, then take it whole.
    size = len(sock.recv(1, socket.MSG_PEEK | socket.MSG_TRUNC))
    if size == 0:
        return None
    resp = pb.criu_resp()
    resp.ParseFromString(sock.recv(size))
    return resp


def _stderr_hint(proc: subprocess.Popen) -> str:
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    return f": {err[-1]}" if err else ""


# Logged as errors, yet CRIU carries on: not the reason a request failed.
_HARMLESS = ("Can't setup RLIMIT_NOFILE",)


def error_lines(log_path: Path | None, limit: int = 3) -> list[str]:
    """CRIU's own `Error (...)` lines from its log, the part a person needs first: the first
    (the cause: later ones are mostly its consequences, such as "9001 killed by signal 9") and
    the last."""
    if not log_path or not log_path.exists():
        return []
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [ln.strip() for ln in lines if "Error" in ln and not any(h in ln for h in _HARMLESS)]
    return errors if len(errors) <= limit else errors[:1] + errors[len(errors) - limit + 1:]


def _log_hint(log_path: Path | None, resp) -> str:
    # CRIU's log names the cause; its RPC answer often repeats only the first (harmless) error.
    errors = error_lines(log_path) or [resp.cr_errmsg.strip() or f"errno {resp.cr_errno}"]
    return ": " + " | ".join(errors)


def version(criu_binary: str = "criu", deadline: "Deadline | None" = None) -> str:
    """CRIU's version as `major.minor[.sublevel]`, asked over RPC."""
    pb = rpc()
    resp = call(pb.criu_req(type=pb.VERSION), criu_binary=criu_binary, deadline=deadline)
    v = resp.version
    text = f"{v.major_number}.{v.minor_number}"
    return f"{text}.{v.sublevel}" if v.HasField("sublevel") and v.sublevel else text


def log_event(stage: str, pid: int, _log=log.get("crikpy.criu")) -> bool:
    """Notification handler: each CRIU stage becomes a debug event (useful for timing a dump)."""
    _log.debug("criu.stage", stage=stage, pid=pid or None)
    return True
