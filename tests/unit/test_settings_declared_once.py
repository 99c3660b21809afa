"""Each setting is declared once (crikpy/settings_table.py): its flag, env twin and config key all
reach its Settings field and the defaults are the declared ones. docs/settings.md is generated
from the same declarations (tests/unit/test_docs.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import structlog
import yaml
from click.testing import CliRunner

from crikpy import cli
from crikpy.settings import Settings, s3_options
from crikpy.stores import S3Options
from crikpy.settings_table import SETTINGS, Setting

# Settings fields that are not settings: where Kubernetes mounts the ServiceAccount.
NOT_SETTINGS = {"kubernetes_token_path", "kubernetes_ca_path"}


def test_declarations_are_whole_and_unambiguous():
    for surface in ("field", "flag", "env", "config_key"):
        names = [getattr(s, surface) for s in SETTINGS if getattr(s, surface)]
        assert len(names) == len(set(names)), f"a {surface} is declared twice"
    for s in SETTINGS:
        assert s.flag or s.config_key, f"{s.field} cannot be set"
        assert bool(s.flag) == bool(s.env), f"{s.field}: a flag goes with its CRIKPY_* twin"
        assert not s.env or s.env.startswith("CRIKPY_"), s.field
        # --help shows the help; a setting in the config file alone is explained in docs/settings.md.
        assert s.help if s.flag else s.key_note, f"{s.field} is explained nowhere"
        assert "[default" not in s.help, f"{s.field}: the default is added from the declaration"


def test_settings_defaults_are_the_declared_ones():
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    declared = {s.field: s.default for s in SETTINGS if not s.s3_option}
    assert fields.keys() - declared.keys() == NOT_SETTINGS | {"s3"}
    assert {name: fields[name] for name in declared} == declared
    # The S3 settings are held in Settings.s3, whose defaults (those of S3Options(), which an
    # s3:// store opened without settings takes) are the declared ones.
    s3_declared = {s.field: s.default for s in SETTINGS if s.s3_option}
    assert {field: Settings().declared(field) for field in s3_declared} == s3_declared
    assert Settings().s3 == s3_options(s3_declared) == S3Options()


@pytest.mark.parametrize("path", [["run"], ["check"], ["checkpoints", "list"],
                                  ["checkpoints", "show"], ["checkpoints", "delete"],
                                  ["checkpoints", "release"]], ids=" ".join)
def test_every_command_takes_the_settings_declared_for_it(path):
    command = cli.cli
    for name in path:
        command = command.commands[name]
    params = {p.name: p for p in command.params}
    for s in SETTINGS:
        if s.flag and (path == ["run"] or not s.run_only):
            assert params[s.field].help == s.cli_help()
            assert params[s.field].envvar == s.env
        else:
            assert s.field not in params


# A value unlike each default that validate() accepts; ids and names are also store keys.
SAMPLES = {"text": "example-1", "path": "/example", "int": 5, "seconds": 20, "bool": True,
           "duration": "10m", "names": "aws,gcp", "paths": ["/a", "/b"]}
SAMPLE_FOR = {"store": "s3://bucket/prefix"}


def sample(s: Setting):
    if s.choices:
        return [choice for choice in s.choices if choice != s.default][-1]
    if s.field.endswith("_url"):
        return "http://example-1:8080"
    return SAMPLE_FOR.get(s.field, SAMPLES[s.kind])


def expected(s: Setting, value):
    """What Settings holds once `value` is read."""
    return {"path": Path, "seconds": float, "duration": lambda _: 600.0,
            "names": lambda v: tuple(v.split(",")), "paths": tuple}.get(s.kind, lambda v: v)(value)


def as_flags(s: Setting, value) -> list[str]:
    if s.kind == "bool":
        return [s.flag]
    if s.kind == "paths":
        return [arg for path in value for arg in (s.flag, path)]
    return [s.flag, str(value)]


def as_env(s: Setting, value) -> str:
    if s.kind == "bool":
        return "true"
    return " ".join(value) if s.kind == "paths" else str(value)


ROUTES = [pytest.param(s, route, id=f"{s.field}-{route}") for s in SETTINGS
          for route in ("flag", "env", "config key")
          if (s.config_key if route == "config key" else s.flag)]


@pytest.mark.parametrize("setting, route", ROUTES)
def test_every_route_reaches_the_declared_field(setting, route, tmp_path, monkeypatch):
    monkeypatch.setattr("crikpy.settings.DEFAULT_CONFIG_PATH", tmp_path / "none.yaml")
    monkeypatch.setattr("crikpy.settings.CRIK_CONFIG_PATH", tmp_path / "none-either.yaml")
    resolved = []
    monkeypatch.setattr("crikpy.app.run", lambda settings, command: resolved.append(settings))
    value = sample(setting)
    if setting.field == "config_file":  # a config file named must exist
        value = tmp_path / "given.yaml"
        value.write_text("")
    # Only what the test gives: no CRIKPY_* or Kubernetes variables of the machine running it.
    env = {name: None for name in os.environ
           if name.startswith(("CRIKPY_", "KUBERNETES_", "POD_")) or name == "NODE_NAME"}
    # A node name, for the node-state settings that need one.
    env.update(HOSTNAME="h", KUBERNETES_NODE_NAME="node-a")
    args: list[str] = []
    if route == "flag":
        args = as_flags(setting, value)
    elif route == "env":
        env[str(setting.env)] = as_env(setting, value)
    else:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({setting.config_key: value}))
        args = ["--config", str(config)]

    saved = structlog.get_config()  # the CLI points structlog at the runner's stderr
    try:
        result = CliRunner().invoke(cli.cli, ["run", *args, "--", "true"], env=env)
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output
    [settings] = resolved
    assert settings.declared(setting.field) == expected(setting, value)
