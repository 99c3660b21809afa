"""What crikpy reports of a CRIU failure."""

from __future__ import annotations

import pytest

from crikpy.criu.preflight import node_fault_in
from crikpy.criu.session import error_lines


def test_criu_error_lines_keep_the_cause_first(tmp_path):
    log = tmp_path / "restore.log"
    log.write_text("(00.01) 9003: Error (criu/files.c:1221): Unable to open fd=1 id=0xb\n"
                   "(00.02) 9001: Error (criu/cr-restore.c:1265): 9003 exited, status=1\n"
                   "(00.03) Error (criu/cr-restore.c:2331): Restoring FAILED.\n"
                   "(00.04) Error (criu/cr-restore.c:1269): 9001 killed by signal 9: Killed\n")
    got = error_lines(log)
    assert len(got) == 3 and "Unable to open fd=1" in got[0] and "killed by signal 9" in got[-1]


# Whose fault a failed restore is: the node's keeps the checkpoint uncounted (exit 178); any
# other counts towards its quarantine. Lines as CRIU 4.2 wrote them in real failures here.
NODE_FAULTS = {
    "a taken PID": "(00.05) 9001: Error (criu/cr-restore.c:1478): Can't fork for 9001: File exists",
    "a full tmpfs (a smaller /dev/shm)":
        "(00.21) 9001: Error (criu/files-reg.c:329): Can't send data: No space left on device",
    "a lower open-file limit":
        "(00.01) Error (criu/servicefd.c:282): sfd: Can't chose service_fd_base: 768 834",
    "too many open files": "(00.02) 9001: Error (criu/files.c:1013): Can't open fd: Too many open files",
    "missing privileges": "(00.01) Error (criu/cr-restore.c:3129): prctl failed: Operation not permitted",
    "a port in use": "(00.30) 9001: Error (criu/sk-inet.c:1034): Can't bind inet socket (id 7): Address already in use",
}
CHECKPOINT_FAULTS = {
    "a file the image lacks": ("(00.02) 9001: Error (criu/files-reg.c:2177): Can't open file "
                               "tmp/fifo on restore: No such file or directory"),
    "a corrupt image": "(00.01) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)",
    "a container terminal": "(00.03) Error (criu/tty.c:1453): tty: No task found with sid 0",
}


@pytest.mark.parametrize("line", NODE_FAULTS.values(), ids=NODE_FAULTS.keys())
def test_a_restore_failure_caused_by_the_node_is_named_the_nodes(line):
    assert node_fault_in(f"(00.00) Version: 4.2.1\n{line}\n(00.40) Error (criu/cr-restore.c:2331): Restoring FAILED.\n")


@pytest.mark.parametrize("line", CHECKPOINT_FAULTS.values(), ids=CHECKPOINT_FAULTS.keys())
def test_other_restore_failures_are_not_the_nodes(line):
    assert node_fault_in(f"{line}\n(00.40) Error (criu/cr-restore.c:2331): Restoring FAILED.\n") is None
