"""One validated Settings object, merged from flags > environment > config file > defaults.

`cli.py` hands over what click collected from flags and their `CRIKPY_*` twins (None when unset);
this module reads the YAML config file, maps crik's keys onto crikpy's, validates every value and
fills in defaults. Nothing else in crikpy reads the config file.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
import reprlib
from pathlib import Path
from typing import Any, Mapping

import yaml

from crikpy.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/crikpy/config.yaml")
# crik's own location, read when crikpy's is absent, so that a crik deployment's ConfigMap works
# unmoved.
CRIK_CONFIG_PATH = Path("/etc/crik/config.yaml")
DEFAULT_STORE = "file:///var/lib/crikpy/checkpoints"
RESTORE_FAILURE_POLICIES = ("cold-start", "fail")
CHECKPOINT_ON = ("always", "node-shutdown", "never")
NODE_STATE_SOURCES = ("kubernetes", "crik", "aws", "gcp", "azure")
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
LOG_LEVELS = ("debug", "info", "warning", "error")
AFTER_FAILED_CHECKPOINT = ("clear", "keep")
COMPRESSION = ("zstd", "none")
# How long before the machine goes a cloud's notice comes: the time a notice checkpoint may take.
NOTICE_LEAD_SECONDS = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}
# A name becomes part of store keys and file paths; DNS-label characters keep it safe everywhere.
_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Settings:
    store: str = DEFAULT_STORE
    name: str = ""
    namespace: str | None = None
    on_restore_failure: str = "cold-start"
    keep_checkpoints: int = 2
    work_dir: Path = Path("/var/lib/crikpy/work")
    pid_floor: int = 9000
    additional_paths: tuple[str, ...] = ()
    inotify_incompatible_paths: tuple[str, ...] = ()
    node_state_server_url: str | None = None
    criu_binary: str = "criu"
    log_level: str = "info"
    grace_period: float = 30.0
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_path_style: bool = False
    s3_part_size_mib: int = 8
    s3_concurrency: int = 4
    s3_sse: str | None = None
    s3_sse_kms_key_id: str | None = None
    s3_storage_class: str | None = None
    checkpoint_on: str = "always"
    node_state_sources: tuple[str, ...] = ()  # empty: those that are configured (see resolve)
    node_state_timeout: float = 3.0
    node_name: str | None = None
    kubernetes_api_url: str | None = None
    kubernetes_token_path: str = f"{SERVICE_ACCOUNT}/token"
    kubernetes_ca_path: str = f"{SERVICE_ACCOUNT}/ca.crt"
    aws_imds_url: str = "http://169.254.169.254"
    gcp_metadata_url: str = "http://metadata.google.internal"
    azure_metadata_url: str = "http://169.254.169.254"
    notice_poll_interval: float = 5.0
    checkpoint_interval: float | None = None  # seconds; None: no periodic checkpoints
    after_failed_checkpoint: str = "clear"
    restore_attempts: int = 3
    notice_wait: float | None = None  # seconds; None: the cloud's lead time plus the grace period
    encryption_key_file: str | None = None
    redact_command: bool = False
    s3_credentials_file: str | None = None
    compression: str = "zstd"
    config_file: Path | None = None  # the file these settings were read from; None: none

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


def normal_path(path: str) -> str:
    """`/data/`, `/data/.`, `//data` and `/data` are one path (POSIX keeps a leading `//`)."""
    return "/" + posixpath.normpath(path).lstrip("/") if path.startswith("/") else path


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    short.maxlist = short.maxdict = 4
    short.maxlevel = 2
    return short


_shown = _short_repr().repr  # a value as an error quotes it: short, whatever YAML aliases built


# config-file key -> (Settings field, converter). crik's keys (imageDir, additionalPaths,
# inotifyIncompatiblePaths, nodeStateServerURL) are spelled as crik spells them.
def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key '{key}' must be a non-empty string, got {_shown(value)}")
    return value


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}' must be an integer, got {_shown(value)}")
    return value


def _seconds(key: str, value: Any) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not isinstance(value, (int, float)) or not math.isfinite(seconds):
        raise ConfigError(f"config key '{key}' must be a finite number of seconds, "
                          f"got {_shown(value)}")
    return seconds


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false, got {_shown(value)}")
    return value


_DURATION_RE = re.compile(r"(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?"
                          r"(?:([0-9]{1,9}(?:\.[0-9]{1,9})?)s?)?")


def parse_duration(key: str, value: Any) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h30m`."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION_RE.fullmatch(str(value).strip())
            if not match or not any(match.groups()):
                raise ConfigError(f"{key} {_shown(value)} is not a duration; write e.g. 90s, 10m "
                                  "or 1h30m")
            h, m, sec = match.groups()
            seconds = int(h or 0) * 3600 + int(m or 0) * 60 + float(sec or 0)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{key} must be a finite duration longer than 0, got {_shown(value)}")
    return seconds


def _names(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key '{key}' must be a list of names, got {_shown(value)}")
    return tuple(v.strip() for v in value)


def _paths(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"config key '{key}' must be a list of paths, got {_shown(value)}")
    return tuple(value)


_CONFIG_KEYS = {
    "store": ("store", _str),
    "name": ("name", _str),
    "namespace": ("namespace", _str),
    "onRestoreFailure": ("on_restore_failure", _str),
    "keepCheckpoints": ("keep_checkpoints", _int),
    "workDir": ("work_dir", _str),
    "pidFloor": ("pid_floor", _int),
    "additionalPaths": ("additional_paths", _paths),
    "inotifyIncompatiblePaths": ("inotify_incompatible_paths", _paths),
    "nodeStateServerURL": ("node_state_server_url", _str),
    "criuBinary": ("criu_binary", _str),
    "logLevel": ("log_level", _str),
    "gracePeriod": ("grace_period", _seconds),
    "s3EndpointURL": ("s3_endpoint_url", _str),
    "s3Region": ("s3_region", _str),
    "s3PathStyle": ("s3_path_style", _bool),
    "s3PartSizeMiB": ("s3_part_size_mib", _int),
    "s3Concurrency": ("s3_concurrency", _int),
    "s3SSE": ("s3_sse", _str),
    "s3SSEKMSKeyId": ("s3_sse_kms_key_id", _str),
    "s3StorageClass": ("s3_storage_class", _str),
    "checkpointOn": ("checkpoint_on", _str),
    "nodeStateSources": ("node_state_sources", _names),
    "nodeStateTimeout": ("node_state_timeout", _seconds),
    "nodeName": ("node_name", _str),
    "kubernetesAPIURL": ("kubernetes_api_url", _str),
    "awsIMDSURL": ("aws_imds_url", _str),
    "gcpMetadataURL": ("gcp_metadata_url", _str),
    "azureMetadataURL": ("azure_metadata_url", _str),
    "noticePollInterval": ("notice_poll_interval", _seconds),
    "checkpointInterval": ("checkpoint_interval", parse_duration),
    "afterFailedCheckpoint": ("after_failed_checkpoint", _str),
    "restoreAttempts": ("restore_attempts", _int),
    "noticeWait": ("notice_wait", parse_duration),
    "encryptionKeyFile": ("encryption_key_file", _str),
    "redactCommand": ("redact_command", _bool),
    "s3CredentialsFile": ("s3_credentials_file", _str),
    "compression": ("compression", _str),
}
_CRIK_IMAGE_DIR = "imageDir"


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The config file's values as Settings field names; {} when an optional file is absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist; create it or drop --config")
        return {}
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}")
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
            values["store"] = "file://" + _str(key, value)
            continue
        if key not in _CONFIG_KEYS:
            known = ", ".join(sorted([*_CONFIG_KEYS, _CRIK_IMAGE_DIR]))
            raise ConfigError(f"config file {path}: unknown key '{key}' (known keys: {known})")
        field, convert = _CONFIG_KEYS[key]
        values[field] = convert(key, value)
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
    # Flag values arrive as text or tuples; config-file values were converted when read.
    if "work_dir" in merged:
        merged["work_dir"] = Path(merged["work_dir"])
    if "node_state_sources" in merged:
        merged["node_state_sources"] = _names("node-state-sources", merged["node_state_sources"])
    for field in ("checkpoint_interval", "notice_wait"):
        if isinstance(merged.get(field), str):
            merged[field] = parse_duration(field.replace("_", "-"), merged[field])
    for field in ("additional_paths", "inotify_incompatible_paths"):
        if field in merged:  # "/data/", "/data/." and "/data" are one path
            merged[field] = tuple(dict.fromkeys(normal_path(p) for p in merged[field]))
    # crik checkpoints only when its node-state server says the node is shutting down.
    if merged.get("node_state_server_url") and "checkpoint_on" not in merged:
        merged["checkpoint_on"] = "node-shutdown"
    if not merged.get("node_state_sources") and merged.get("checkpoint_on") == "node-shutdown":
        merged["node_state_sources"] = tuple(
            name for name, needs in (("kubernetes", "kubernetes_api_url"),
                                     ("crik", "node_state_server_url"))
            if merged.get(needs))
    settings = Settings(**merged)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if not s.name:
        raise ConfigError("no workload name: set --name (CRIKPY_NAME) or run where $HOSTNAME is set")
    for label, value in (("name", s.name), ("namespace", s.namespace)):
        if value is not None and not _NAME_RE.match(value):
            raise ConfigError(
                f"{label} '{value}' is not usable as a store key; use letters, digits, '.', '_' "
                "and '-' (at most 253), starting and ending with a letter or digit"
            )
    if not s.store.startswith(("file://", "s3://")):
        raise ConfigError(
            f"store '{s.store}' has an unknown scheme; use file:///path or s3://bucket/prefix"
        )
    if s.on_restore_failure not in RESTORE_FAILURE_POLICIES:
        raise ConfigError(
            f"on-restore-failure '{s.on_restore_failure}' is not one of "
            f"{', '.join(RESTORE_FAILURE_POLICIES)}"
        )
    if s.keep_checkpoints < 1:
        raise ConfigError(f"keep-checkpoints must be at least 1, got {s.keep_checkpoints}")
    if s.pid_floor < 0 or s.pid_floor > 4_000_000:
        raise ConfigError(f"pid-floor must be between 0 (off) and 4000000, got {s.pid_floor}")
    if not s.work_dir.is_absolute():
        raise ConfigError(f"work-dir '{s.work_dir}' must be an absolute path")
    for p in (*s.additional_paths, *s.inotify_incompatible_paths):
        if not p.startswith("/"):
            raise ConfigError(f"path '{p}' in additionalPaths/inotifyIncompatiblePaths must be absolute")
    for label, value in (("grace-period", s.grace_period),
                         ("node-state-timeout", s.node_state_timeout),
                         ("notice-poll-interval", s.notice_poll_interval)):
        if not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number of seconds, got {value}")
    if s.grace_period < 3:  # 2 s of it are the reserve (deadline.py)
        raise ConfigError(f"grace-period must be at least 3 seconds, got {s.grace_period}; "
                          "set it to the pod's terminationGracePeriodSeconds")
    if s.after_failed_checkpoint not in AFTER_FAILED_CHECKPOINT:
        raise ConfigError(f"after-failed-checkpoint '{s.after_failed_checkpoint}' is not one of "
                          f"{', '.join(AFTER_FAILED_CHECKPOINT)}")
    if s.compression not in COMPRESSION:
        raise ConfigError(f"compression '{s.compression}' is not one of {', '.join(COMPRESSION)}")
    if not 1 <= s.restore_attempts <= 100:
        raise ConfigError(f"restore-attempts must be between 1 and 100, got {s.restore_attempts}")
    if s.checkpoint_on not in CHECKPOINT_ON:
        raise ConfigError(f"checkpoint-on '{s.checkpoint_on}' is not one of {', '.join(CHECKPOINT_ON)}")
    for source in s.node_state_sources:
        if source not in NODE_STATE_SOURCES:
            raise ConfigError(f"node-state source '{source}' is unknown; use "
                              f"{', '.join(NODE_STATE_SOURCES)}")
    needs = {"kubernetes": ("kubernetes_api_url", "the API server URL (in-cluster, or "
                            "--kubernetes-api-url)"),
             "crik": ("node_state_server_url", "nodeStateServerURL")}
    for source in s.node_state_sources:
        if source in needs:
            field, label = needs[source]
            if not getattr(s, field):
                raise ConfigError(f"node-state source '{source}' needs {label}")
            if not s.node_name:
                raise ConfigError(f"node-state source '{source}' needs the node's name: set "
                                  "--node-name or $KUBERNETES_NODE_NAME from the downward API "
                                  "(spec.nodeName)")
    if s.checkpoint_on == "node-shutdown" and not s.node_state_sources:
        raise ConfigError("checkpoint-on node-shutdown needs a node-state source; set "
                          "--node-state-sources (kubernetes, crik, aws, gcp, azure)")
    if s.node_state_timeout <= 0 or s.notice_poll_interval <= 0:
        raise ConfigError("node-state-timeout and notice-poll-interval must be above 0")
    if s.log_level not in LOG_LEVELS:
        raise ConfigError(f"log-level '{s.log_level}' is not one of {', '.join(LOG_LEVELS)}")
