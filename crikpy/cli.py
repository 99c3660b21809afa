"""crikpy's command line: parse flags and their CRIKPY_* twins, build Settings, call in.

Every error ends in one line on stderr, `crikpy: error: ...`, and an exit code of its own
(see crikpy.errors). Values come from flags > environment > config file > defaults.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import sys
from pathlib import Path

import click

from crikpy import __version__, log, settings as settings_mod, settings_table
from crikpy.errors import (EXIT_CODES, INTERNAL_EXIT_CODE, USAGE_EXIT_CODE, ConfigError,
                           CrikpyError, PreflightFailed)

EPILOG = ("Exit codes: the workload's own (128+N when signal N killed it) for `run`; crikpy's "
          "own: " + ", ".join(f"{code} {text.split(':')[0].split(' (')[0]}"
                              for code, text in EXIT_CODES.items()) + ".")


# A declared setting's kind, as click reads it; kinds not here are text until resolve() reads them.
_CLICK_TYPES = {"int": int, "seconds": float,  # crikpy reads paths itself, with its own errors
                "path": click.Path(path_type=Path, readable=False)}


def _option(s: settings_table.Setting):
    """The click option of a declared setting. Unset, it is None (a repeatable one, empty), so
    that the config file and the declared default still count beneath it."""
    names = [f"{s.flag}/--no-{str(s.flag).removeprefix('--')}" if s.kind == "bool" else s.flag]
    if s.crik_flag:
        names.append(s.crik_flag)
    return click.option(*names, s.field, default=None, multiple=s.kind == "paths",
                        type=click.Choice(s.choices) if s.choices else _CLICK_TYPES.get(s.kind),
                        metavar=s.metavar, envvar=s.env, show_envvar=True, help=s.cli_help())


_DEBUG = click.option("--debug", is_flag=True, help="crik's flag: the same as --log-level debug.")


def _with_options(f, settings):
    options = []
    for s in settings:
        options.append(_option(s))
        if s.field == "log_level":  # crik's --debug, listed beside what it means
            options.append(_DEBUG)
    for option in reversed(options):  # the first applied is listed last
        f = option(f)
    return f


def _common(f):
    """Options every command shares: where checkpoints are, whose, and how to reach the store."""
    return _with_options(f, [s for s in settings_table.SETTINGS if s.flag and not s.run_only])


def _run_only(f):
    """Options of `run` alone: how the workload is checkpointed and restored."""
    return _with_options(f, [s for s in settings_table.SETTINGS if s.flag and s.run_only])


def _settings(config_file, debug=False, **given) -> settings_mod.Settings:
    ctx = click.get_current_context()
    if debug or ctx.meta.get("crikpy.debug"):
        # A flag beats the environment, so only a --log-level flag can contradict --debug.
        level = given.get("log_level")
        typed = ctx.get_parameter_source("log_level") == click.core.ParameterSource.COMMANDLINE
        if typed and level != "debug":
            raise ConfigError(f"--debug and --log-level {level} disagree; give one of them")
        given["log_level"] = "debug"
    s = settings_mod.resolve(given, config_file, os.environ)
    log.configure(s.log_level)
    logger = log.get()
    if s.config_file:
        logger.info("config.read", path=str(s.config_file))
    else:
        logger.debug("config.none", looked_in=[str(settings_mod.DEFAULT_CONFIG_PATH),
                                               str(settings_mod.CRIK_CONFIG_PATH)])
    # What flags, variables and config (crik's keys mapped) came to: for debugging a set-up.
    logger.debug("config.resolved", **{k: str(v) if isinstance(v, Path) else v
                                       for k, v in s.as_declared().items()})
    return s


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crikpy")
@click.option("--debug", is_flag=True,
              help="crik's flag, where crik takes it: --log-level debug for the command.")
@click.pass_context
def cli(ctx, debug):
    """Keep a long-running process alive across the loss of the machine under it.

    crikpy wraps a container's command: it runs the workload as its child, and when SIGTERM
    arrives it checkpoints the whole process tree with CRIU into a store. The next start of the
    container, on any node, restores it instead of starting it cold.
    """
    ctx.meta["crikpy.debug"] = debug  # ctx.meta is shared with the command that follows


# Options end where COMMAND begins (as in crik, tini, dumb-init): `crikpy run bash -c '...'` needs
# no `--`, and whatever follows COMMAND is COMMAND's.
@cli.command(epilog=EPILOG, context_settings={"allow_interspersed_args": False})
@_common
@_run_only
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command, config_file, **given):
    """Run COMMAND as PID 1's child; checkpoint it on SIGTERM, restore it on the next start.

    \b
    Typical use, as a container's entrypoint:
        crikpy run -- my-server --flag
    crikpy's options end at COMMAND, so the `--` may be left out, as with crik.
    On start, the latest committed checkpoint for this name is restored if there is one; COMMAND
    is started cold otherwise. Every catchable signal but SIGTERM is forwarded to the workload;
    zombies are reaped; crikpy exits with the workload's code. When the workload exits on its own
    its checkpoint is stale and the next start is cold.
    """
    from crikpy import app  # noqa: PLC0415

    return app.run(_settings(config_file, **given), command)


@cli.command(epilog=EPILOG)
@_common
def check(config_file, **given):
    """Check that checkpoints can be taken and stored here; one line per item.

    Looks at CRIU (present, version suits this kernel, `criu check`), privileges, whether
    ns_last_pid is writable, and whether the store is reachable and writable under the
    workload's key, conditional writes included (as a commit writes its pointer). Exits 180 when
    anything needed is missing.
    """
    from crikpy.criu import preflight  # noqa: PLC0415

    s = _settings(config_file, **given)
    findings = [*preflight.criu_findings(s.criu_binary), *preflight.privilege_findings(),
                preflight.soft_dirty_finding(s.criu_binary), _store_finding(s),
                _encryption_finding(s)]
    for f in findings:
        click.echo(f"{f.status:8} {f.item:22} {f.detail}")
    if any(f.status == preflight.PROBLEM for f in findings):
        raise PreflightFailed("some checks found problems (see above)")


def _encryption_finding(s: settings_mod.Settings):
    from crikpy.checkpoint import keys  # noqa: PLC0415
    from crikpy.criu.preflight import NOTE, OK, PROBLEM, Finding  # noqa: PLC0415

    if not s.encryption_key_file:
        return Finding("encryption", NOTE, "no key file: checkpoints (the workload's whole "
                       "memory) are stored in the clear and restored unauthenticated; set "
                       "--encryption-key-file")
    try:
        ring = keys.load(s.encryption_key_file)
    except CrikpyError as e:
        return Finding("encryption", PROBLEM, str(e))
    return Finding("encryption", OK, f"{len(ring.keys)} key(s); new checkpoints are sealed with "
                                     f"key id {ring.sealing_id.hex()}")


def _store_finding(s: settings_mod.Settings):
    from crikpy.criu.preflight import OK, PROBLEM, Finding  # noqa: PLC0415
    from crikpy.stores import open_store  # noqa: PLC0415

    # Under the workload's own key, and conditionally, as a commit writes its pointer: a policy
    # scoped to the workload, or one that refuses conditional writes, shows here and not at the
    # first checkpoint.
    key = f"{s.workload_key}/.crikpy-probe-{secrets.token_hex(4)}"
    body = secrets.token_bytes(64)
    try:
        store = open_store(s.store, s.s3)
        store.put_bytes(key, body)
        back = store.get_bytes(key)
        store.delete(key)
    except CrikpyError as e:
        return Finding("store", PROBLEM, str(e))
    if back is None or back.data != body:
        return Finding("store", PROBLEM, f"{s.store}: a probe object did not read back whole")
    try:
        etag = store.put_bytes(key, body, if_absent=True)
        store.put_bytes(key, body[::-1], if_match=etag)
    except CrikpyError as e:
        return Finding("store", PROBLEM, f"{e} (a conditional write under {s.workload_key}/, as "
                                         "every commit writes its latest pointer)")
    finally:
        try:
            store.delete(key)
        except CrikpyError:
            pass  # the first failure is the finding
    return Finding("store", OK, f"{s.store} is reachable and writable under {s.workload_key}/ "
                                "(put, get, delete, conditional put); "
                                f"credentials: {store.describe_credentials()}")


@cli.group()
def checkpoints():
    """Inspect and manage the checkpoints in the store."""


def _repo(config_file, given):
    from crikpy.parts import open_repository  # noqa: PLC0415

    return open_repository(_settings(config_file, **given))


@checkpoints.command("list", epilog=EPILOG)
@_common
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_(config_file, as_json, **given):
    """List a workload's checkpoints: committed, quarantined (with the reason) or incomplete."""
    infos = _repo(config_file, given).list()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=1))
        return
    if not infos:
        click.echo("no checkpoints")
        return
    for line in checkpoints_table(infos, datetime.datetime.now(datetime.timezone.utc)):
        click.echo(line)


def checkpoints_table(infos, now: datetime.datetime) -> list[str]:
    """`checkpoints list` for people: aligned columns, ages and sizes as kubectl shows them."""
    from crikpy.checkpoint.manifest import id_age_seconds, is_id  # noqa: PLC0415

    rows = [("ID", "STATUS", "AGE", "SIZE", "LATEST", "REASON")]
    for i in infos:
        # The id holds its creation time, so even an incomplete checkpoint has an age.
        age = human_age(id_age_seconds(i.id, now)) if is_id(i.id) else "-"
        # A reason may be a multi-line CRIU message: one row stays one line.
        reason = " ".join(i.reason.split()) if i.reason else "-"
        rows.append((log.printable(i.id), i.status, age, human_size(i.total_bytes),
                     "yes" if i.latest else "no", log.printable(reason)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]])
            for row in rows]


def human_age(seconds: float) -> str:
    """`42s`, `5m12s`, `3h5m`, `2d3h`: the two largest units, as kubectl's AGE column."""
    seconds = max(int(seconds), 0)  # a writer's clock ahead of ours is not a negative age
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (smaller, smaller_size) in zip(units, units[1:]):
        if seconds >= size:
            rest = seconds % size // smaller_size
            return f"{seconds // size}{unit}" + (f"{rest}{smaller}" if rest else "")
    return f"{seconds}s"


def human_size(size: int | None) -> str:
    """`1023 B`, `1.5 KiB`, `256 MiB`: binary units, one decimal when it is not .0."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    shown = f"{value:.1f}".removesuffix(".0")
    return f"{shown} {unit}"


@checkpoints.command(epilog=EPILOG)
@_common
@click.argument("checkpoint_id", metavar="ID")
def show(config_file, checkpoint_id, **given):
    """Print a checkpoint's manifest (files, sizes, checksums, command, versions) as JSON."""
    click.echo(_repo(config_file, given).manifest(checkpoint_id).to_json().decode())


@checkpoints.command(epilog=EPILOG)
@_common
@click.argument("checkpoint_id", metavar="ID")
def delete(config_file, checkpoint_id, **given):
    """Delete a checkpoint; if it was the latest, the next start is cold."""
    _repo(config_file, given).delete(checkpoint_id)
    click.echo(f"deleted {checkpoint_id}")


@checkpoints.command(epilog=EPILOG)
@_common
@click.argument("checkpoint_id", metavar="ID")
def release(config_file, checkpoint_id, **given):
    """Take a checkpoint out of quarantine, so that a start restores it again.

    Its failed-attempt count is reset. It becomes the latest checkpoint unless a newer one is.
    """
    from crikpy.checkpoint.records import Released  # noqa: PLC0415

    outcome = _repo(config_file, given).release(checkpoint_id)
    click.echo({Released.LATEST: f"released {checkpoint_id}; it is the latest checkpoint",
                Released.NOT_LATEST: f"released {checkpoint_id}; a newer checkpoint stays latest",
                Released.NOT_QUARANTINED: f"{checkpoint_id} was not quarantined; its failed "
                                          "attempts are reset, the latest pointer is left as "
                                          "it is"}[outcome])


def _one_line(error: Exception) -> str:
    """An error for stderr: one line, no URL credentials, nothing that drives a terminal."""
    return log.printable(log.scrubbed(" ".join(str(error).split())))


def main() -> None:
    _open_missing_std_fds()
    log.configure()
    try:
        code = cli.main(prog_name="crikpy", standalone_mode=False)
    except click.exceptions.Abort:
        code = 130
    except click.ClickException as e:
        e.show()
        code = USAGE_EXIT_CODE
    except CrikpyError as e:
        log.line(f"crikpy: error: {_one_line(e)}")
        code = e.exit_code
    except Exception as e:  # noqa: BLE001  (a bug: one line and the traceback in the log)
        log.get().error("crikpy.internal_error", error=f"{type(e).__name__}: {e}",
                        exc_info=True)
        log.line(f"crikpy: internal error: {type(e).__name__}: {_one_line(e)}; this is a bug "
                 "in crikpy, please report it with the log")
        code = INTERNAL_EXIT_CODE
    log.drain()
    sys.exit(code or 0)


def _open_missing_std_fds() -> None:
    """A closed fd 0, 1 or 2 becomes /dev/null: otherwise the next file crikpy opens would take
    its number, and log lines (or the workload's output) would land in it."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


if __name__ == "__main__":
    main()
