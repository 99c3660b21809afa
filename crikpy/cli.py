"""crikpy's command line: parse flags and their CRIKPY_* twins, build Settings, call in.

Every error ends in one line on stderr, `crikpy: error: ...`, and an exit code of its own
(see crikpy.errors). Values come from flags > environment > config file > defaults.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import sys
from pathlib import Path

import click

from crikpy import __version__, log, settings as settings_mod
from crikpy.errors import (EXIT_CODES, INTERNAL_EXIT_CODE, USAGE_EXIT_CODE, ConfigError,
                           CrikpyError, PreflightFailed)

EPILOG = ("Exit codes: the workload's own (128+N when signal N killed it) for `run`; crikpy's "
          "own: " + ", ".join(f"{code} {text.split(':')[0].split(' (')[0]}"
                              for code, text in EXIT_CODES.items()) + ".")


def _common(f):
    """Options every command shares: where checkpoints are and whose they are."""
    options = [
        click.option("--config", "--config-path", "config_path", type=click.Path(path_type=Path),
                     envvar="CRIKPY_CONFIG", show_envvar=True,
                     help=f"YAML config file; --config-path is crik's name for it [default: "
                          f"{settings_mod.DEFAULT_CONFIG_PATH}, else crik's "
                          f"{settings_mod.CRIK_CONFIG_PATH}; absent is fine]."),
        click.option("--store", envvar="CRIKPY_STORE", show_envvar=True,
                     help=f"Where checkpoints live: file:///path or s3://bucket/prefix [default: "
                          f"{settings_mod.DEFAULT_STORE}]."),
        click.option("--name", envvar="CRIKPY_NAME", show_envvar=True,
                     help="The workload's identity in the store [default: $HOSTNAME, the pod's "
                          "name, stable for StatefulSet pods]."),
        click.option("--namespace", envvar="CRIKPY_NAMESPACE", show_envvar=True,
                     help="Groups names in the store [default: $POD_NAMESPACE when set]."),
        click.option("--encryption-key-file", envvar="CRIKPY_ENCRYPTION_KEY_FILE", show_envvar=True,
                     help="A file (a mounted Secret) of base64-encoded 32-byte keys, one per "
                          "line: checkpoints are sealed with the first (AES-256-GCM) and opened "
                          "with any, and only checkpoints that authenticate are restored "
                          "[default: none, checkpoints are stored in the clear]."),
        click.option("--log-level", type=click.Choice(settings_mod.LOG_LEVELS),
                     envvar="CRIKPY_LOG_LEVEL", show_envvar=True, help="[default: info]"),
        click.option("--debug", is_flag=True, help="crik's flag: the same as --log-level debug."),
        # S3: credentials and, when these are unset, endpoint and region come the way every AWS
        # tool finds them (AWS_* variables, shared config files, IRSA, Pod Identity, instance role).
        click.option("--s3-endpoint-url", envvar="CRIKPY_S3_ENDPOINT_URL", show_envvar=True,
                     help="S3-compatible endpoint (MinIO, Ceph RGW, R2, ...) [default: "
                          "$AWS_ENDPOINT_URL, else AWS]."),
        click.option("--s3-region", envvar="CRIKPY_S3_REGION", show_envvar=True,
                     help="[default: $AWS_REGION / $AWS_DEFAULT_REGION / config file]"),
        click.option("--s3-path-style/--no-s3-path-style", default=None,
                     envvar="CRIKPY_S3_PATH_STYLE", show_envvar=True,
                     help="Path-style addressing, which most S3-compatible servers need "
                          "[default: off]."),
        click.option("--s3-part-size", "s3_part_size_mib", type=int,
                     envvar="CRIKPY_S3_PART_SIZE", show_envvar=True,
                     help="Multipart part size in MiB, at least 5 [default: 8]."),
        click.option("--s3-concurrency", type=int, envvar="CRIKPY_S3_CONCURRENCY",
                     show_envvar=True,
                     help="Parts held in memory at once, across all transfers: crikpy's "
                          "transfers hold at most part size x this [default: 4]."),
        click.option("--s3-sse", type=click.Choice(["AES256", "aws:kms"]), envvar="CRIKPY_S3_SSE",
                     show_envvar=True, help="Server-side encryption: SSE-S3 or SSE-KMS."),
        click.option("--s3-sse-kms-key-id", envvar="CRIKPY_S3_SSE_KMS_KEY_ID", show_envvar=True,
                     help="KMS key for --s3-sse aws:kms [default: the bucket's]."),
        click.option("--s3-credentials-file", envvar="CRIKPY_S3_CREDENTIALS_FILE",
                     show_envvar=True,
                     help="An AWS credentials file only crikpy reads (a mounted Secret), so that "
                          "the workload does not inherit the keys, which would then be in every "
                          "checkpoint [default: boto3's own search; IRSA and Pod Identity also "
                          "keep them out]."),
        click.option("--s3-storage-class", envvar="CRIKPY_S3_STORAGE_CLASS", show_envvar=True,
                     help="Storage class of checkpoint objects, e.g. STANDARD, "
                          "INTELLIGENT_TIERING."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _settings(config_path, debug=False, **given) -> settings_mod.Settings:
    ctx = click.get_current_context()
    if debug or ctx.meta.get("crikpy.debug"):
        # A flag beats the environment, so only a --log-level flag can contradict --debug.
        level = given.get("log_level")
        typed = ctx.get_parameter_source("log_level") == click.core.ParameterSource.COMMANDLINE
        if typed and level != "debug":
            raise ConfigError(f"--debug and --log-level {level} disagree; give one of them")
        given["log_level"] = "debug"
    s = settings_mod.resolve(given, config_path, os.environ)
    log.configure(s.log_level)
    logger = log.get()
    if s.config_file:
        logger.info("config.read", path=str(s.config_file))
    else:
        logger.debug("config.none", looked_in=[str(settings_mod.DEFAULT_CONFIG_PATH),
                                               str(settings_mod.CRIK_CONFIG_PATH)])
    # What flags, variables and config (crik's keys mapped) came to: for debugging a set-up.
    logger.debug("config.resolved", **{k: str(v) if isinstance(v, Path) else v
                                       for k, v in dataclasses.asdict(s).items()})
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
@click.option("--on-restore-failure", type=click.Choice(settings_mod.RESTORE_FAILURE_POLICIES),
              envvar="CRIKPY_ON_RESTORE_FAILURE", show_envvar=True,
              help="When a checkpoint cannot be restored (it is quarantined either way): start "
                   "the command cold, or exit 7 [default: cold-start].")
@click.option("--keep-checkpoints", type=int, envvar="CRIKPY_KEEP_CHECKPOINTS", show_envvar=True,
              help="Committed checkpoints kept per workload; older ones are deleted after a "
                   "commit [default: 2].")
@click.option("--work-dir", envvar="CRIKPY_WORK_DIR", show_envvar=True,
              help="Local staging directory for dumps and downloads "
                   "[default: /var/lib/crikpy/work].")
@click.option("--pid-floor", type=int, envvar="CRIKPY_PID_FLOOR", show_envvar=True,
              help="Workload PIDs start above this, so restores never collide with crikpy's own "
                   "(0: leave ns_last_pid alone) [default: 9000].")
@click.option("--additional-path", "additional_paths", multiple=True,
              envvar="CRIKPY_ADDITIONAL_PATHS", show_envvar=True,
              help="A file or directory outside the image that the workload uses; copied into "
                   "each checkpoint and put back before a restore. Repeatable; the variable "
                   "takes space-separated paths.")
@click.option("--grace-period", type=float, envvar="CRIKPY_GRACE_PERIOD", show_envvar=True,
              help="Seconds from SIGTERM to the kubelet's SIGKILL (the pod's "
                   "terminationGracePeriodSeconds). A checkpoint not committed by then, less a "
                   "10% reserve (at least 2 s), is abandoned and the workload shuts down "
                   "normally [default: 30].")
@click.option("--checkpoint-on", type=click.Choice(settings_mod.CHECKPOINT_ON),
              envvar="CRIKPY_CHECKPOINT_ON", show_envvar=True,
              help="What a SIGTERM means. always: checkpoint. node-shutdown: checkpoint only when "
                   "a node-state source says the node is leaving (else shut down normally and "
                   "clear the latest checkpoint, as on a rollout). never: plain init "
                   "[default: always; node-shutdown when crik's nodeStateServerURL is set].")
@click.option("--node-state-sources", envvar="CRIKPY_NODE_STATE_SOURCES", show_envvar=True,
              help="Comma-separated, tried in order: kubernetes, crik, aws, gcp, azure. Cloud "
                   "sources are also polled for interruption notices [default: kubernetes when "
                   "in-cluster, crik when its URL is set].")
@click.option("--node-state-timeout", type=float, envvar="CRIKPY_NODE_STATE_TIMEOUT",
              show_envvar=True,
              help="Seconds to wait for the sources' answer on SIGTERM; no answer means "
                   "'not leaving' [default: 3].")
@click.option("--node-name", envvar="CRIKPY_NODE_NAME", show_envvar=True,
              help="This pod's node [default: $KUBERNETES_NODE_NAME or $NODE_NAME].")
@click.option("--kubernetes-api-url", envvar="CRIKPY_KUBERNETES_API_URL", show_envvar=True,
              help="[default: in-cluster, https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]")
@click.option("--aws-imds-url", envvar="CRIKPY_AWS_IMDS_URL", show_envvar=True,
              help="[default: http://169.254.169.254]")
@click.option("--gcp-metadata-url", envvar="CRIKPY_GCP_METADATA_URL", show_envvar=True,
              help="[default: http://metadata.google.internal]")
@click.option("--azure-metadata-url", envvar="CRIKPY_AZURE_METADATA_URL", show_envvar=True,
              help="[default: http://169.254.169.254]")
@click.option("--notice-poll-interval", type=float, envvar="CRIKPY_NOTICE_POLL_INTERVAL",
              show_envvar=True,
              help="Seconds between polls of the cloud sources for an interruption notice; on "
                   "one, crikpy checkpoints at once and stops the workload [default: 5].")
@click.option("--checkpoint-interval", envvar="CRIKPY_CHECKPOINT_INTERVAL", show_envvar=True,
              help="Also checkpoint every DURATION (e.g. 10m) with the workload left running, "
                   "for nodes that vanish without notice; a restore then rewinds the workload to "
                   "that moment [default: off].")
@click.option("--after-failed-checkpoint", type=click.Choice(settings_mod.AFTER_FAILED_CHECKPOINT),
              envvar="CRIKPY_AFTER_FAILED_CHECKPOINT", show_envvar=True,
              help="When a checkpoint failed and the workload then shut down on its SIGTERM, "
                   "the previous checkpoint is older than the state it shut down from. clear: "
                   "the next start is cold, as without crikpy. keep: the next start restores the "
                   "previous checkpoint, rewinding the workload [default: clear].")
@click.option("--compression", type=click.Choice(settings_mod.COMPRESSION),
              envvar="CRIKPY_COMPRESSION", show_envvar=True,
              help="Compress memory pages on their way to the store, 1 MiB at a time; a MiB "
                   "that does not shrink is stored as it is, so memory that does not compress "
                   "costs little [default: zstd].")
@click.option("--redact-command/--no-redact-command", default=None,
              envvar="CRIKPY_REDACT_COMMAND", show_envvar=True,
              help="Leave the workload's command line out of checkpoint manifests (it may hold "
                   "secrets); a restore then cannot say whether the command changed "
                   "[default: recorded].")
@click.option("--restore-attempts", type=int, envvar="CRIKPY_RESTORE_ATTEMPTS", show_envvar=True,
              help="Restores of one checkpoint that may fail (the pod exits and restarts between "
                   "them) before it is quarantined and the previous one is tried [default: 3].")
@click.option("--notice-wait", envvar="CRIKPY_NOTICE_WAIT", show_envvar=True,
              help="After a notice checkpoint, how long to wait for SIGTERM before exiting "
                   "anyway (the node stayed), so that the container restarts and restores "
                   "[default: the cloud's lead time plus the grace period].")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command, config_path, **given):
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
    from crikpy import entrypoint  # noqa: PLC0415

    return entrypoint.run(_settings(config_path, **given), command)


@cli.command(epilog=EPILOG)
@_common
def check(config_path, **given):
    """Check that checkpoints can be taken and stored here; one line per item.

    Looks at CRIU (present, version suits this kernel, `criu check`), privileges, whether
    ns_last_pid is writable, and whether the store is reachable and writable. Exits 180 when
    anything needed is missing.
    """
    from crikpy.criu import preflight  # noqa: PLC0415

    s = _settings(config_path, **given)
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

    key = f"{s.workload_key}/.crikpy-probe-{secrets.token_hex(4)}"
    body = secrets.token_bytes(64)
    try:
        store = open_store(s.store, s)
        store.put_bytes(key, body)
        back = store.get_bytes(key)
        store.delete(key)
    except CrikpyError as e:
        return Finding("store", PROBLEM, str(e))
    if back is None or back.data != body:
        return Finding("store", PROBLEM, f"{s.store}: a probe object did not read back whole")
    return Finding("store", OK, f"{s.store} is reachable and writable (put, get, delete); "
                                f"credentials: {store.describe_credentials()}")


@cli.group()
def checkpoints():
    """Inspect and manage the checkpoints in the store."""


def _repo(config_path, given):
    from crikpy.checkpoint.commit import open_repository  # noqa: PLC0415

    return open_repository(_settings(config_path, **given))


@checkpoints.command("list", epilog=EPILOG)
@_common
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_(config_path, as_json, **given):
    """List a workload's checkpoints: committed, quarantined (with the reason) or incomplete."""
    infos = _repo(config_path, given).list()
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
        rows.append((i.id, i.status, age, human_size(i.total_bytes),
                     "yes" if i.latest else "no", reason))
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
def show(config_path, checkpoint_id, **given):
    """Print a checkpoint's manifest (files, sizes, checksums, command, versions) as JSON."""
    click.echo(_repo(config_path, given).manifest(checkpoint_id).to_json().decode())


@checkpoints.command(epilog=EPILOG)
@_common
@click.argument("checkpoint_id", metavar="ID")
def delete(config_path, checkpoint_id, **given):
    """Delete a checkpoint; if it was the latest, the next start is cold."""
    _repo(config_path, given).delete(checkpoint_id)
    click.echo(f"deleted {checkpoint_id}")


@checkpoints.command(epilog=EPILOG)
@_common
@click.argument("checkpoint_id", metavar="ID")
def release(config_path, checkpoint_id, **given):
    """Take a checkpoint out of quarantine, so that a start restores it again.

    Its failed-attempt count is reset. It becomes the latest checkpoint unless a newer one is.
    """
    became_latest = _repo(config_path, given).release(checkpoint_id)
    click.echo(f"released {checkpoint_id}" + ("; it is the latest checkpoint" if became_latest
                                              else "; a newer checkpoint stays latest"))


def main() -> None:
    log.configure()
    try:
        code = cli.main(prog_name="crikpy", standalone_mode=False)
    except click.exceptions.Abort:
        code = 130
    except click.ClickException as e:
        e.show()
        code = USAGE_EXIT_CODE
    except CrikpyError as e:
        click.echo(f"crikpy: error: {e}", err=True)
        code = e.exit_code
    except Exception as e:  # noqa: BLE001  (a bug: one line and the traceback in the log)
        log.get().error("crikpy.internal_error", error=f"{type(e).__name__}: {e}",
                        exc_info=True)
        click.echo(f"crikpy: internal error: {type(e).__name__}: {e}; this is a bug in crikpy, "
                   "please report it with the log", err=True)
        code = INTERNAL_EXIT_CODE
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
