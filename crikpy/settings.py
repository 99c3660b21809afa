"""One validated Settings object, merged from flags > environment > config file > defaults.

`cli.py` hands over what click collected from flags and their `CRIKPY_*` twins (None when unset);
this module reads the YAML config file, maps crik's keys onto crikpy's, validates every value and
fills in defaults. Nothing else in crikpy reads the config file. The settings themselves (keys,
kinds, defaults) are declared in settings_table.py.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

import yaml

from crikpy.errors import ConfigError
from crikpy.files import UnfitFile, read_small
from crikpy.paths import additional_paths_fault
from crikpy.settings_kinds import KINDS, check_value, parse_duration  # noqa: F401 (tests)
from crikpy.settings_table import (BY_FIELD, CRIK_CONFIG_PATH, DEFAULT_CONFIG_PATH,
                                   NODE_STATE_SOURCES, SETTINGS, default)
from crikpy.stores.s3.options import S3Options

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# How long before the machine goes a cloud's notice comes: the time a notice checkpoint may take.
NOTICE_LEAD_SECONDS = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}
S3_SETTINGS = tuple(s for s in SETTINGS if s.s3_option)
# A name becomes part of store keys and file paths; DNS-label characters keep it safe everywhere.
_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, resolved. The defaults are those declared in crikpy/settings_table.py."""

    store: str = default("store")
    name: str = default("name")  # empty: resolve() takes $HOSTNAME
    namespace: str | None = default("namespace")
    on_restore_failure: str = default("on_restore_failure")
    keep_checkpoints: int = default("keep_checkpoints")
    work_dir: Path = default("work_dir")
    pid_floor: int = default("pid_floor")
    ipc_namespace: str = default("ipc_namespace")
    additional_paths: tuple[str, ...] = default("additional_paths")
    inotify_incompatible_paths: tuple[str, ...] = default("inotify_incompatible_paths")
    node_state_server_url: str | None = default("node_state_server_url")
    criu_binary: str = default("criu_binary")
    log_level: str = default("log_level")
    grace_period: float = default("grace_period")
    # The S3 settings (those declared with an s3_option), as an s3:// store takes them.
    s3: S3Options = dataclasses.field(default_factory=S3Options)
    checkpoint_on: str = default("checkpoint_on")
    # empty: those that are configured (see resolve)
    node_state_sources: tuple[str, ...] = default("node_state_sources")
    node_state_timeout: float = default("node_state_timeout")
    node_name: str | None = default("node_name")
    kubernetes_api_url: str | None = default("kubernetes_api_url")
    # Not settings: where Kubernetes mounts the ServiceAccount; tests point them elsewhere.
    kubernetes_token_path: str = f"{SERVICE_ACCOUNT}/token"
    kubernetes_ca_path: str = f"{SERVICE_ACCOUNT}/ca.crt"
    aws_imds_url: str = default("aws_imds_url")
    gcp_metadata_url: str = default("gcp_metadata_url")
    azure_metadata_url: str = default("azure_metadata_url")
    notice_poll_interval: float = default("notice_poll_interval")
    # seconds; None: no periodic checkpoints
    checkpoint_interval: float | None = default("checkpoint_interval")
    after_failed_checkpoint: str = default("after_failed_checkpoint")
    restore_attempts: int = default("restore_attempts")
    on_new_version: str = default("on_new_version")
    version_ignore_env: tuple[str, ...] = default("version_ignore_env")
    pod_revision: str | None = default("pod_revision")
    outside_tree: str = default("outside_tree")
    max_container_files: int = default("max_container_files")
    max_changed_mib: int = default("max_changed_mib")
    ghost_limit_mib: int = default("ghost_limit_mib")
    # seconds; None: the cloud's lead time plus the grace period
    notice_wait: float | None = default("notice_wait")
    encryption_key_file: str | None = default("encryption_key_file")
    redact_command: bool = default("redact_command")
    compression: str = default("compression")
    # the file these settings were read from; None: none
    config_file: Path | None = default("config_file")

    def declared(self, field: str) -> Any:
        """A declared setting's value, as it was set: an S3 setting's is read from self.s3."""
        setting = BY_FIELD[field]
        if setting.s3_option is None:
            return getattr(self, field)
        value = getattr(self.s3, setting.s3_option)
        return value // setting.s3_unit if setting.s3_unit != 1 else value

    def as_declared(self) -> dict[str, Any]:
        """Every field, with the S3 settings by their declared names in place of `s3`."""
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "s3":
                fields.update({s.field: self.declared(s.field) for s in S3_SETTINGS})
            else:
                fields[f.name] = getattr(self, f.name)
        return fields

    @property
    def longest_checkpoint(self) -> float:
        """The most seconds any checkpoint of this configuration may take (a notice's lead, or
        the grace period): a writer of this name older than that is dead."""
        leads = [NOTICE_LEAD_SECONDS[source] for source in self.node_state_sources
                 if source in NOTICE_LEAD_SECONDS]
        return max([self.grace_period, *leads])

    def notice_wait_seconds(self, source: str | None) -> float:
        """How long to wait for SIGTERM after a notice checkpoint before exiting anyway."""
        if self.notice_wait is not None:
            return self.notice_wait
        return NOTICE_LEAD_SECONDS.get(source or "", self.grace_period) + self.grace_period

    @property
    def workload_key(self) -> str:
        """The workload's identity in the store: `namespace/name`, or `name` alone."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


# config-file key -> its declared setting. crik's keys (imageDir, additionalPaths,
# inotifyIncompatiblePaths, nodeStateServerURL) are spelled as crik spells them.
_CONFIG_KEYS = {s.config_key: s for s in SETTINGS if s.config_key}
_CRIK_IMAGE_DIR = "imageDir"


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The config file's values as Settings field names; {} when an optional file is absent."""
    try:
        text = read_small(path).decode()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist; create it or drop --config")
        return {}
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}")
    except UnfitFile as e:
        raise ConfigError(f"config file {path} {e}; give --config a YAML file")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as UTF-8 YAML")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax")
    except (ValueError, TypeError, AttributeError, IndexError, RecursionError) as e:
        # PyYAML's constructors raise these for tags and values it cannot build (!!int abc,
        # a 13th month, nesting too deep).
        raise ConfigError(f"config file {path} holds a value YAML cannot build "
                          f"({type(e).__name__}); fix that value")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(raw).__name__}")

    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == _CRIK_IMAGE_DIR:
            if "store" in raw:
                raise ConfigError(
                    f"config file {path} sets both 'store' and crik's 'imageDir'; keep one"
                )
            values["store"] = "file://" + KINDS["text"].from_config(key, value)
            continue
        if key not in _CONFIG_KEYS:
            known = ", ".join(sorted([*_CONFIG_KEYS, _CRIK_IMAGE_DIR]))
            raise ConfigError(f"config file {path}: unknown key '{key}' (known keys: {known})")
        setting = _CONFIG_KEYS[key]
        values[setting.field] = KINDS[setting.kind].from_config(key, value)
    return values


def default_config_path() -> Path | None:
    """The config file read when none is given: crikpy's, else crik's, else None."""
    for path in (DEFAULT_CONFIG_PATH, CRIK_CONFIG_PATH):
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            pass  # there but unreadable: read_config_file says so, in one line
        return path
    return None


def resolve(given: Mapping[str, Any], config_path: Path | None,
            env: Mapping[str, str] | None = None) -> Settings:
    """Merge flag/env values (`given`, None meaning unset) over the config file over defaults.

    `env` is the process environment, read here only for Kubernetes' own variables, which give
    defaults: the pod's name ($HOSTNAME), namespace ($POD_NAMESPACE), node
    ($KUBERNETES_NODE_NAME or $NODE_NAME) and the in-cluster API server.
    """
    env = env or {}
    for setting in SETTINGS:  # "" is not "unset": an empty key file name would mean no key
        if setting.env and env.get(setting.env) == "" and given.get(setting.field) in (None, ()):
            raise ConfigError(f"{setting.env} is set but empty; give it a value or unset it")
    merged: dict[str, Any] = {}
    for field, value in (
        ("name", env.get("HOSTNAME")),
        ("namespace", env.get("POD_NAMESPACE")),
        ("node_name", env.get("KUBERNETES_NODE_NAME") or env.get("NODE_NAME")),
    ):
        if value:
            merged[field] = value
    if env.get("KUBERNETES_SERVICE_HOST"):
        host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
        merged["kubernetes_api_url"] = f"https://{host}:{port}"
    path = config_path or default_config_path()
    if path is not None:
        merged.update(read_config_file(path, required=config_path is not None))
        merged["config_file"] = path
    merged.update({k: v for k, v in given.items() if v is not None and v != ()})
    # Flag values arrive as click read them; config-file values were read by their kind already.
    for setting in SETTINGS:
        if setting.field in merged:
            merged[setting.field] = KINDS[setting.kind].settle(setting, merged[setting.field])
    # crik checkpoints only when its node-state server says the node is shutting down.
    if merged.get("node_state_server_url") and "checkpoint_on" not in merged:
        merged["checkpoint_on"] = "node-shutdown"
    if not merged.get("node_state_sources") and merged.get("checkpoint_on") == "node-shutdown":
        merged["node_state_sources"] = tuple(
            name for name, needs in (("kubernetes", "kubernetes_api_url"),
                                     ("crik", "node_state_server_url"))
            if merged.get(needs))
    values = {s.field: merged.get(s.field, s.default) for s in SETTINGS}
    validate(values)
    return Settings(**{s.field: values[s.field] for s in SETTINGS if s.s3_option is None},
                    s3=s3_options(values))


def s3_options(values: Mapping[str, Any]) -> S3Options:
    """The S3 settings among the declared values (by Settings field), as an S3Options."""
    return S3Options(**{s.s3_option: values[s.field] * s.s3_unit if s.s3_unit != 1
                        else values[s.field] for s in S3_SETTINGS})


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate(values: Mapping[str, Any]) -> None:
    """ConfigError unless the declared settings' values (by Settings field) make a working
    configuration: each value by its declaration (settings_kinds), then the rules between them."""
    for setting in SETTINGS:
        check_value(setting, values[setting.field])
    check_together(values)


def check_together(v: Mapping[str, Any]) -> None:
    """The rules no single value's declaration states: a name usable as a store key, a store
    that is a file:// directory or an S3 bucket, absolute paths a checkpoint can record, the
    node-state sources and what each needs, for an s3:// store an SSE-KMS key only with SSE-KMS,
    timings that fit inside the grace period."""
    if not v["name"]:
        raise ConfigError("no workload name: set --name (CRIKPY_NAME) or run where $HOSTNAME is set")
    for label in ("name", "namespace"):
        value = v[label]
        if value is not None and not _NAME_RE.match(value):
            raise ConfigError(
                f"{label} '{value}' is not usable as a store key; use letters, digits, '.', '_' "
                "and '-' (at most 253), starting and ending with a letter or digit"
            )
    store = v["store"]
    if not store.startswith(("file://", "s3://")):
        raise ConfigError(
            f"store '{store}' has an unknown scheme; use file:///path or s3://bucket/prefix"
        )
    bucket = urllib.parse.urlsplit(store).netloc
    if store.startswith("s3://") and not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(f"store '{store}': '{bucket}' is not an S3 bucket name (3 to 63 "
                          "lowercase letters, digits, '.' and '-'); use s3://bucket/prefix")
    if not v["work_dir"].is_absolute():
        raise ConfigError(f"work-dir '{v['work_dir']}' must be an absolute path")
    for p in (*v["additional_paths"], *v["inotify_incompatible_paths"]):
        if not p.startswith("/"):
            raise ConfigError(f"path '{p}' in additionalPaths/inotifyIncompatiblePaths must be absolute")
    fault = additional_paths_fault(list(v["additional_paths"]))
    if fault:
        raise ConfigError(f"{BY_FIELD['additional_paths'].names}: {fault}")
    sources = v["node_state_sources"]
    for source in sources:
        if source not in NODE_STATE_SOURCES:
            raise ConfigError(f"node-state source '{source}' is unknown; use "
                              f"{', '.join(NODE_STATE_SOURCES)}")
    needs = {"kubernetes": ("kubernetes_api_url", "the API server URL (in-cluster, or "
                            "--kubernetes-api-url)"),
             "crik": ("node_state_server_url", "nodeStateServerURL")}
    for source in sources:
        if source in needs:
            field, label = needs[source]
            if not v[field]:
                raise ConfigError(f"node-state source '{source}' needs {label}")
            if not v["node_name"]:
                raise ConfigError(f"node-state source '{source}' needs the node's name: set "
                                  "--node-name or $KUBERNETES_NODE_NAME from the downward API "
                                  "(spec.nodeName)")
    if v["checkpoint_on"] == "node-shutdown" and not sources:
        raise ConfigError("checkpoint-on node-shutdown needs a node-state source; set "
                          "--node-state-sources (kubernetes, crik, aws, gcp, azure)")
    if store.startswith("s3://"):  # what S3Options.check_pairing() says when the store opens
        s3_options(v).check_pairing()
    timeout, grace = v["node_state_timeout"], v["grace_period"]
    if timeout <= 0 or v["notice_poll_interval"] <= 0:
        raise ConfigError("node-state-timeout and notice-poll-interval must be above 0")
    if timeout >= grace:
        raise ConfigError(f"node-state-timeout ({timeout:g} s) must be shorter than "
                          f"the grace-period ({grace:g} s): the decision is made inside it")
