"""crikpy's own secrets stay out of the workload, the logs and the store's records.

The workload inherits crikpy's environment, and every checkpoint holds the workload's memory;
logs go to `kubectl logs`, readable by more people than the Secret is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crikpy.settings_table import SETTINGS
from tests.harness.s3server import BUCKET
from tests.helpers import Run

SECRET = "hunter2-s3cr3t"
URL_SETTINGS = [s for s in SETTINGS if s.field.endswith("_url") or s.field == "store"]


def _crikpy(tmp_path, *args, env=()):
    return subprocess.run(
        [sys.executable, "-m", "crikpy", *args], capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CRIKPY_")},
             "CRIKPY_WORK_DIR": str(tmp_path / "work"), "CRIKPY_PID_FLOOR": "0", **dict(env)})


@pytest.mark.parametrize("command", [
    ["sh", "-c", "exit 0", f"--db-password={SECRET}"],
    [f"/nonexistent/--db-password={SECRET}"],  # not runnable: its own log line
], ids=["runs", "not runnable"])
def test_redact_command_keeps_the_command_out_of_every_log_line(tmp_path, command):
    run = Run(tmp_path, *command, extra=["--redact-command"])
    run.finish()
    assert run.events and SECRET not in run.stderr


def test_without_redact_command_the_command_is_logged(tmp_path):
    run = Run(tmp_path, "sh", "-c", "exit 0", f"--db-password={SECRET}")
    run.finish()
    assert SECRET in str(run.event("workload.started"))


def test_the_workload_inherits_none_of_crikpys_settings(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n")
    done = _crikpy(tmp_path, "run", "--", "env", env={
        "CRIKPY_STORE": f"file://{tmp_path / 'store'}", "CRIKPY_NAME": "app",
        "CRIKPY_ENCRYPTION_KEY_FILE": str(key_file), "UNRELATED": "kept"})
    assert done.returncode == 0, done.stderr
    names = {line.partition("=")[0] for line in done.stdout.splitlines()}
    assert "UNRELATED" in names and not [n for n in names if n.startswith("CRIKPY_")]


def test_aws_secrets_in_the_environment_are_warned_about(tmp_path, s3_server):
    # A store that answers: one that does not would be retried for the S3 store's 15 s first.
    done = _crikpy(tmp_path, "run", "--", "true", env={
        **s3_server.env, "CRIKPY_STORE": f"s3://{BUCKET}/secrets-{os.getpid()}",
        "CRIKPY_S3_PATH_STYLE": "true", "CRIKPY_NAME": "app"})
    assert done.returncode == 0, done.stderr
    warnings = [json.loads(ln) for ln in done.stderr.splitlines()
                if "checkpoint.secret_in_environment" in ln]
    assert warnings and warnings[0]["variables"] == ["AWS_SECRET_ACCESS_KEY"]
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in done.stderr


@pytest.mark.parametrize("setting", URL_SETTINGS, ids=lambda s: s.field)
def test_a_url_holding_credentials_is_refused_without_showing_them(tmp_path, setting):
    url = {"store": f"s3://user:{SECRET}@bucket/prefix"}.get(
        setting.field, f"http://user:{SECRET}@127.0.0.1:1/")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({setting.config_key: url}))
    done = _crikpy(tmp_path, "run", "--config", str(config), "--name", "app", "--", "true")
    assert done.returncode == 172, done.stderr
    assert SECRET not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("crikpy: error:") and setting.config_key in last


def test_credentials_in_a_url_never_reach_a_log_line(tmp_path):
    """Whatever names a URL in a log event (a library's error message included)."""
    done = subprocess.run([sys.executable, "-c", (
        "from crikpy import log; log.configure(); "
        f"log.get().warning('store.retry', error='Could not connect to http://user:{SECRET}@h/x')")],
        capture_output=True, text=True, check=True)
    assert "store.retry" in done.stderr and "http://" in done.stderr
    assert SECRET not in done.stderr
