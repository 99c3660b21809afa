"""What crikpy reports of a CRIU failure."""

from __future__ import annotations

from crikpy.criu.session import error_lines


def test_criu_error_lines_keep_the_cause_first(tmp_path):
    log = tmp_path / "restore.log"
    log.write_text("(00.01) 9003: Error (criu/files.c:1221): Unable to open fd=1 id=0xb\n"
                   "(00.02) 9001: Error (criu/cr-restore.c:1265): 9003 exited, status=1\n"
                   "(00.03) Error (criu/cr-restore.c:2331): Restoring FAILED.\n"
                   "(00.04) Error (criu/cr-restore.c:1269): 9001 killed by signal 9: Killed\n")
    got = error_lines(log)
    assert len(got) == 3 and "Unable to open fd=1" in got[0] and "killed by signal 9" in got[-1]
