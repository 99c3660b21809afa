"""The command line as a user meets it: help, version, errors with their exit codes, checkpoints."""

import json

from crikpy import __version__
from crikpy.checkpoint.repository import CheckpointRepository
from crikpy.checkpoint.manifest import new_id
from tests.helpers import crikpy, sample_info


def test_version():
    out = crikpy("--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_bad_config_exits_172_with_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("colour: blue\n")
    out = crikpy("run", "--config", str(config), "--name", "x", "--", "true")
    assert out.returncode == 172
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("crikpy: error: config file") and "unknown key 'colour'" in out.stderr


def test_env_twin_beats_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"store: file://{tmp_path}/from-config\n")
    out = crikpy("checkpoints", "list", "--config", str(config), "--name", "x",
                 env={"CRIKPY_STORE": f"file://{tmp_path}/from-env"})
    assert out.returncode == 0 and out.stdout.strip() == "no checkpoints"
    out = crikpy("check", "--config", str(config), "--name", "x",
                 env={"CRIKPY_STORE": f"file://{tmp_path}/from-env"})
    assert f"file://{tmp_path}/from-env is reachable" in out.stdout


def test_bad_flag_value_is_a_usage_error():
    out = crikpy("run", "--on-restore-failure", "sometimes", "--", "true")
    assert out.returncode == 171 and "sometimes" in out.stderr


def test_unwritable_store_stops_run_with_exit_4(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = crikpy("run", "--store", f"file://{blocker}/sub", "--name", "x", "--", "true")
    # The store is read before anything starts: nothing runs on an unknown state.
    assert out.returncode == 173 and "crikpy: error:" in out.stderr and str(blocker) in out.stderr


def test_nothing_to_run_is_a_usage_error(tmp_path):
    out = crikpy("run", "--store", f"file://{tmp_path}", "--name", "x")
    assert out.returncode == 171
    assert "no checkpoint to restore and no command given" in out.stderr


def test_unwritable_store_is_a_problem_for_check(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = crikpy("check", "--store", f"file://{blocker}/sub", "--name", "x")
    assert out.returncode == 180
    assert any(ln.startswith("problem") and "store" in ln for ln in out.stdout.splitlines())


def test_checkpoints_list_show_delete(tmp_path):
    from crikpy.stores import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    staging = tmp_path / "staging" / "images"
    staging.mkdir(parents=True)
    (staging / "pages-1.img").write_bytes(b"x" * 100)
    ckpt_id = new_id()
    CheckpointRepository(store, "prod/app").commit(staging.parent, ckpt_id,
                                                   sample_info(name="prod/app"))
    where = ["--store", f"file://{tmp_path / 'store'}", "--name", "app", "--namespace", "prod"]

    listing = json.loads(crikpy("checkpoints", "list", "--json", *where).stdout)
    assert [(i["id"], i["status"], i["latest"], i["total_bytes"]) for i in listing] == [
        (ckpt_id, "committed", True, 100)]
    table = crikpy("checkpoints", "list", *where).stdout
    assert ckpt_id in table and "committed" in table

    shown = json.loads(crikpy("checkpoints", "show", ckpt_id, *where).stdout)
    assert shown["files"][0]["path"] == "images/pages-1.img"

    missing = crikpy("checkpoints", "show", new_id(), *where)
    assert missing.returncode == 174 and "checkpoints list" in missing.stderr

    assert crikpy("checkpoints", "delete", ckpt_id, *where).returncode == 0
    assert crikpy("checkpoints", "list", *where).stdout.strip() == "no checkpoints"


def test_check_reports_each_item_on_its_own_line(tmp_path):
    out = crikpy("check", "--store", f"file://{tmp_path}", "--name", "x")
    lines = out.stdout.splitlines()
    items = {ln.split()[1]: ln.split()[0] for ln in lines}
    assert {"criu", "privileges", "ns_last_pid", "store"} <= items.keys()
    assert items["store"] == "ok"
    assert out.returncode == (180 if "problem" in items.values() else 0)
