"""crikpy as a drop-in for crik: crik's config location, crik's flags, crik's command line."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from crikpy import cli
from crikpy.nodestate.crik import CrikSource
from crikpy.settings import resolve
from tests.nodestate.fakes import FakeNodeState
from tests.helpers import WORKLOAD, Run, crikpy

CRIK_CONFIG = "imageDir: /etc/checkpoint\nadditionalPaths:\n- /root/.cache\n"


@pytest.fixture
def config_dirs(tmp_path, monkeypatch):
    """crikpy's and crik's default config files, moved under tmp_path; neither exists yet."""
    crikpy_path, crik_path = tmp_path / "etc/crikpy/config.yaml", tmp_path / "etc/crik/config.yaml"
    for path in (crikpy_path, crik_path):
        path.parent.mkdir(parents=True)
    monkeypatch.setattr("crikpy.settings.DEFAULT_CONFIG_PATH", crikpy_path)
    monkeypatch.setattr("crikpy.settings.CRIK_CONFIG_PATH", crik_path)
    return crikpy_path, crik_path


def test_crik_config_location_is_read_when_crikpys_is_absent(config_dirs):
    _, crik_path = config_dirs
    crik_path.write_text(CRIK_CONFIG)
    s = resolve({}, None, {"HOSTNAME": "simple-loop-0"})
    assert (s.store, s.additional_paths) == ("file:///etc/checkpoint", ("/root/.cache",))
    assert s.config_file == crik_path


def test_crikpys_config_location_comes_first(config_dirs):
    crikpy_path, crik_path = config_dirs
    crik_path.write_text(CRIK_CONFIG)
    crikpy_path.write_text("store: file:///var/ckpt\n")
    s = resolve({}, None, {"HOSTNAME": "h"})
    assert (s.store, s.additional_paths, s.config_file) == ("file:///var/ckpt", (), crikpy_path)


def test_a_config_given_is_the_only_one_read(config_dirs, tmp_path):
    _, crik_path = config_dirs
    crik_path.write_text(CRIK_CONFIG)
    given = tmp_path / "mine.yaml"
    given.write_text("keepCheckpoints: 4\n")
    s = resolve({}, given, {"HOSTNAME": "h"})
    assert (s.store, s.keep_checkpoints, s.config_file) == (
        "file:///var/lib/crikpy/checkpoints", 4, given)


def test_no_config_anywhere_means_defaults(config_dirs):
    s = resolve({}, None, {"HOSTNAME": "h"})
    assert (s.store, s.config_file) == ("file:///var/lib/crikpy/checkpoints", None)


@pytest.fixture
def runner():
    """Runs the CLI in this process; structlog, which it points at the runner's stderr, is put
    back afterwards."""
    saved = structlog.get_config()
    yield CliRunner()
    structlog.configure(**saved)


def _logged(result) -> list[dict]:
    return [json.loads(ln) for ln in result.stderr.splitlines() if ln.startswith("{")]


def test_the_log_says_which_config_file_was_read(config_dirs, tmp_path, runner):
    _, crik_path = config_dirs
    crik_path.write_text(f"imageDir: {tmp_path / 'ckpt'}\n")
    result = runner.invoke(cli.cli, ["checkpoints", "list", "--name", "h"])
    assert result.exit_code == 0, result.output
    assert [e["path"] for e in _logged(result) if e["event"] == "config.read"] == [str(crik_path)]

    crik_path.unlink()  # none at all: the log says where it looked, for --debug
    result = runner.invoke(cli.cli, ["--debug", "checkpoints", "list", "--name", "h"])
    [none] = [e for e in _logged(result) if e["event"] == "config.none"]
    assert none["looked_in"] == [str(p) for p in config_dirs]


def test_crik_flag_config_path_is_an_alias_of_config(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"imageDir: {tmp_path / 'ckpt'}\n")
    out = crikpy("run", "--config-path", str(config), "--name", "x", "--work-dir",
                 str(tmp_path / "work"), "--pid-floor", "0", "--", "true")
    assert out.returncode == 0, out.stderr
    events = [json.loads(ln) for ln in out.stderr.splitlines()]
    assert [e["path"] for e in events if e["event"] == "config.read"] == [str(config)]
    assert [e["store"] for e in events if e["event"] == "crikpy.started"] == [
        f"file://{tmp_path / 'ckpt'}"]


def _levels(out) -> set[str]:
    return {json.loads(ln)["level"] for ln in out.stderr.splitlines() if ln.startswith("{")}


@pytest.mark.parametrize("args", [["--debug", "checkpoints", "list"],  # crik's place for it
                                  ["checkpoints", "list", "--debug"]])  # kong allows this too
def test_crik_flag_debug_is_log_level_debug(tmp_path, args):
    where = ["--store", f"file://{tmp_path}", "--name", "x"]
    assert "debug" not in _levels(crikpy("checkpoints", "list", *where))
    out = crikpy(*args, *where, env={"CRIKPY_LOG_LEVEL": "warning"})  # a flag beats the env
    assert out.returncode == 0, out.stderr
    assert "debug" in _levels(out)


def test_debug_and_a_different_log_level_flag_are_one_line_error(tmp_path):
    out = crikpy("--debug", "checkpoints", "list", "--log-level", "error", "--store",
                 f"file://{tmp_path}", "--name", "x")
    assert out.returncode == 172
    assert out.stderr.splitlines() == [
        "crikpy: error: --debug and --log-level error disagree; give one of them"]


def test_run_takes_a_command_without_the_double_dash_as_crik_does(tmp_path):
    # crik's command line: `crik run bash -c '...'`. Options end where the command begins.
    out = crikpy("run", "--store", f"file://{tmp_path}", "--name", "x", "--pid-floor", "0",
                 "--work-dir", str(tmp_path / "work"), "sh", "-c", 'echo "$0 $1"', "--name", "-c")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "--name -c\n"


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_crik_node_state_url_with_or_without_its_api_version(suffix):
    # crik asks {url}/nodes/NODE but its server answers /v1/nodes/NODE: crik users whose
    # checkpoints worked wrote the /v1 into nodeStateServerURL, and those following the
    # README did not.
    fake = FakeNodeState()
    try:
        fake.crik_state = "shutting-down"
        assert CrikSource(fake.url + suffix, "node-a").leaving(2).leaving is True
        assert fake.requests == ["GET /v1/nodes/node-a"]
    finally:
        fake.close()


def test_crik_example_config_keys_are_all_understood(config_dirs):
    _, crik_path = config_dirs
    crik_path.write_text((Path(__file__).parents[1] / "e2e/crik-config.yaml").read_text())
    s = resolve({}, None, {"HOSTNAME": "simple-loop-0", "KUBERNETES_NODE_NAME": "node-a"})
    assert s.store == "file:///etc/checkpoint"
    assert s.additional_paths == ("/root/.cache",)
    assert s.inotify_incompatible_paths == ("/root/.config/glib-2.0/settings",
                                            "/usr/share/zoneinfo")
    assert s.node_state_server_url == "http://crik-node-state-server.default.svc.cluster.local:9376"
    assert (s.checkpoint_on, s.node_state_sources) == ("node-shutdown", ("crik",))


def test_inotify_incompatible_files_and_directories_are_deleted_before_a_dump(tmp_path):
    # crik's README finds these paths with `find / -inum`: files as often as directories.
    watched_file, watched_dir = tmp_path / "settings", tmp_path / "zoneinfo"
    watched_file.write_text("[org]")
    (watched_dir / "Europe").mkdir(parents=True)
    config = tmp_path / "c.yaml"
    config.write_text(f"inotifyIncompatiblePaths: [{watched_file}, {watched_dir}]\n")
    run = Run(tmp_path, sys.executable, "-c", WORKLOAD, extra=["--config", str(config)])
    assert run.readline().startswith("ready")
    run.proc.send_signal(signal.SIGTERM)
    run.finish()  # the dump itself fails here, without CRIU; the deletions came before it
    assert run.event("checkpoint.started")
    assert not watched_file.exists() and not watched_dir.exists()
