"""An operator's mistakes: one line naming what is wrong, a code of crikpy's own, nothing lost.

Each test is a mistake that was found to do worse: change a directory it was pointed at, report
success on a store it could not write, rewind the workload, hang PID 1, end in an internal error,
or quietly store checkpoints in the clear.
"""

from __future__ import annotations

import http.server
import os
import stat
import subprocess
import sys

import pytest

from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from crikpy.stores import open_store
from tests.helpers import crikpy, sample_info, serve, staged


def _committed(tmp_path, n=1) -> tuple[CheckpointRepository, list[str]]:
    repo = CheckpointRepository(open_store(f"file://{tmp_path / 'store'}"), "app", keep=5)
    return repo, [repo.commit(staged(tmp_path), new_id(), sample_info()).id for _ in range(n)]


def _one_line(out) -> str:
    [line] = [ln for ln in out.stderr.splitlines() if not ln.startswith("{")]
    return line


def test_an_existing_work_dir_keeps_its_mode(tmp_path):
    # A shared directory (or `/`) given as --work-dir must not become 0700 for everyone else.
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    _committed(tmp_path)  # a restore is tried (and fails here: no CRIU), using the work dir
    out = crikpy("run", "--store", f"file://{tmp_path / 'store'}", "--name", "app",
                 "--work-dir", str(shared), "--pid-floor", "0", "--", "true")
    assert out.returncode == 178, out.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777


def _read_only(path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), 0o400)
        os.chmod(root, 0o500)


def _without_dac_override(*args):
    """crikpy as root without the capabilities that let root write anything."""
    return ["setpriv", "--inh-caps", "-all", "--bounding-set", "-dac_override,-dac_read_search,"
            "-fowner", *args]


@pytest.mark.parametrize("command", ["release", "delete"])
def test_a_store_that_refuses_the_change_is_an_error_not_a_success(tmp_path, command):
    repo, [old, _] = _committed(tmp_path, 2)
    repo.quarantine(old, "for the test")
    _read_only(tmp_path / "store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}
    out = subprocess.run(_without_dac_override(
        sys.executable, "-m", "crikpy", "checkpoints", command, old,
        "--store", f"file://{tmp_path / 'store'}", "--name", "app"),
        capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 173, out.stdout + out.stderr
    assert "Permission denied" in _one_line(out)
    assert command[:-1] not in out.stdout  # no "released ..." / "deleted ..."


def test_releasing_a_checkpoint_that_is_not_quarantined_never_moves_the_pointer(tmp_path):
    repo, [stale] = _committed(tmp_path)
    repo.clear_latest(reason="workload exited")  # its state is older than the workload's end
    out = crikpy("checkpoints", "release", stale, "--store", f"file://{tmp_path / 'store'}",
                 "--name", "app")
    assert out.returncode == 0, out.stderr
    assert "not quarantined" in out.stdout
    assert CheckpointRepository(open_store(f"file://{tmp_path / 'store'}"), "app").latest_id() \
        is None


def test_releasing_the_latest_says_it_is_the_latest(tmp_path):
    repo, [latest] = _committed(tmp_path)
    repo.quarantine(latest, "for the test")
    repo.point_at(latest, reason="an operator put it back by hand")
    out = crikpy("checkpoints", "release", latest, "--store", f"file://{tmp_path / 'store'}",
                 "--name", "app")
    assert out.returncode == 0 and "it is the latest checkpoint" in out.stdout, out.stdout


@pytest.mark.parametrize("ckpt_id", ["", "..", "../app", "x/y", "20261122T142301.123Z-1a2b3c4d/"])
@pytest.mark.parametrize("command", ["show", "release", "delete"])
def test_what_is_not_a_checkpoint_id_is_named_so(tmp_path, command, ckpt_id):
    _committed(tmp_path)
    out = crikpy("checkpoints", command, ckpt_id, "--store", f"file://{tmp_path / 'store'}",
                 "--name", "app")
    assert out.returncode == 174, out.stderr
    assert "is not a checkpoint id" in _one_line(out)


@pytest.mark.parametrize("flag, value", [
    ("--store", "s3://[x/p"),
    ("--store", "file://[/x"),
    ("--s3-endpoint-url", "http://[::1"),
    ("--s3-region", "bogus region"),
])
def test_malformed_urls_and_regions_are_config_errors(tmp_path, flag, value):
    args = ["--store", "s3://bucket/p"] if flag != "--store" else []
    out = crikpy("checkpoints", "list", "--name", "app", *args, flag, value)
    assert out.returncode == 172, out.stderr
    assert flag.lstrip("-") in _one_line(out) and "internal error" not in out.stderr


@pytest.mark.parametrize("content", ["garbage", "[default]\naws_access_key_id = AKIA\n",
                                     "[broken\n"])
def test_a_bad_credentials_file_is_a_config_error_naming_it(tmp_path, content):
    creds = tmp_path / "credentials"
    creds.write_text(content)
    out = crikpy("checkpoints", "list", "--name", "app", "--store", "s3://bucket/p",
                 "--s3-endpoint-url", "http://127.0.0.1:9", "--s3-credentials-file", str(creds))
    assert out.returncode == 172, out.stderr
    assert str(creds) in _one_line(out) and "internal error" not in out.stderr


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "huge"])
@pytest.mark.parametrize("flag", ["--config", "--encryption-key-file"])
def test_a_config_or_key_file_that_is_not_a_small_regular_file_is_refused(tmp_path, flag, kind):
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    elif kind == "huge":
        path = str(tmp_path / "huge")
        with open(path, "wb") as f:
            f.truncate(64 * 1024 * 1024)
    else:
        path = kind
    out = crikpy("run", "--store", f"file://{tmp_path / 'store'}", "--name", "app",
                 "--work-dir", str(tmp_path / "work"), flag, path, "--", "true")
    assert out.returncode == 172, out.stderr
    assert path in _one_line(out)


def test_an_unreadable_config_is_crikpys_one_line_config_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("name: app\n")
    os.chmod(config, 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")}
    out = subprocess.run(_without_dac_override(
        sys.executable, "-m", "crikpy", "checkpoints", "list", "--config", str(config)),
        capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 172, out.stderr
    assert str(config) in _one_line(out)


@pytest.mark.parametrize("env", ["CRIKPY_ENCRYPTION_KEY_FILE", "CRIKPY_STORE", "CRIKPY_NAME"])
def test_a_setting_set_to_an_empty_value_is_refused_not_taken_as_unset(tmp_path, env):
    # An empty CRIKPY_ENCRYPTION_KEY_FILE (a Secret not mounted, a typo in a template) must not
    # mean "no key": checkpoints would then be stored in the clear.
    flags = {"CRIKPY_NAME": ["--name", "app"], "CRIKPY_STORE": ["--store",
                                                              f"file://{tmp_path / 'store'}"]}
    out = crikpy("checkpoints", "list", *[f for e, pair in flags.items() if e != env
                                          for f in pair], env={env: ""})
    assert out.returncode == 172, out.stderr
    assert env in _one_line(out)


def test_a_server_side_encryption_choice_is_checked_with_the_other_settings(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("s3SSE: foo\n")
    out = crikpy("checkpoints", "list", "--name", "app", "--store",
                 f"file://{tmp_path / 'store'}", "--config", str(config))
    assert out.returncode == 172, out.stderr
    assert "s3SSE" in _one_line(out)


class _NotS3(http.server.BaseHTTPRequestHandler):
    """A web server that is not S3 (a wrong --s3-endpoint-url): 404 with an HTML page, as
    `python -m http.server` answers (not XML: botocore then reports the bare status)."""

    def _not_found(self):
        body = b'<!DOCTYPE HTML>\n<html><head><meta charset="utf-8"></head>Not Found</html>\n'
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _not_found

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("command", ["list", "run"])
def test_an_endpoint_that_is_not_s3_is_a_store_error_not_an_empty_store(tmp_path, command):
    # A real web server on 127.0.0.1 that is not S3: a start must not take its 404s for "no
    # checkpoint" and cold-start over the checkpoint the real store holds.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    serve(server)
    store = ["--name", "app", "--store", "s3://bucket/p",
             "--s3-endpoint-url", f"http://127.0.0.1:{server.server_port}"]
    args = (["checkpoints", "list", *store] if command == "list" else
            ["run", *store, "--work-dir", str(tmp_path / "work"), "--pid-floor", "0", "--",
             "true"])
    try:
        out = crikpy(*args, env={"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"})
    finally:
        server.shutdown()
    assert out.returncode == 173, out.stderr
    assert "not an S3" in _one_line(out)
