"""Every setting of crikpy, declared once: flag, env twin, config key, default, help.

The click options (cli.py), the config-file keys and the Settings defaults (settings.py) and the
settings table of docs/settings.md are all made from SETTINGS below; that page is written by
`python tests/docs/generate_reference.py`, and a test fails while it is out of date.
`python -m crikpy.settings_table` prints a short table (flag, env, config key, default).
This module imports nothing of crikpy's but budget.py (which imports nothing), so that every other
module can import it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from crikpy.budget import MAX_RESTORE_ATTEMPTS


DEFAULT_CONFIG_PATH = Path("/etc/crikpy/config.yaml")
# crik's own location, read when crikpy's is absent, so that a crik deployment's ConfigMap works
# unmoved.
CRIK_CONFIG_PATH = Path("/etc/crik/config.yaml")
DEFAULT_STORE = "file:///var/lib/crikpy/checkpoints"
RESTORE_FAILURE_POLICIES = ("cold-start", "fail")
CHECKPOINT_ON = ("always", "node-shutdown", "never")
NODE_STATE_SOURCES = ("kubernetes", "crik", "aws", "gcp", "azure")
LOG_LEVELS = ("debug", "info", "warning", "error")
AFTER_FAILED_CHECKPOINT = ("clear", "keep")
COMPRESSION = ("zstd", "none")
S3_SSE = ("AES256", "aws:kms")
IPC_NAMESPACES = ("own", "shared")
ON_NEW_VERSION = ("cold-start", "restore")
OUTSIDE_TREE = ("warn", "refuse")
MIB = 1024 * 1024

# How a value is read, from a flag, a variable or the config file (settings.py converts each).
# text: a string; path: a string that becomes a Path; seconds: a number; duration: `90s`, `10m`,
# `1h30m` or seconds; names: comma-separated or a YAML list; paths: a repeatable flag, a
# space-separated variable or a YAML list.
Kind = Literal["text", "path", "int", "seconds", "bool", "duration", "names", "paths"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting, everywhere it can be set.

    `help` is written without a final period: the option's help ends with the default shown in
    brackets, then the period. `shown_default` is markdown (backticks for code), for a default
    that is not a plain value; --help shows it without the backticks.
    """

    field: str  # the Settings field
    default: Any = None
    help: str = ""
    flag: str | None = None  # None: config file only
    env: str | None = None
    config_key: str | None = None  # None: flag and variable only
    kind: Kind = "text"
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    shown_default: str | None = None
    crik_flag: str | None = None  # crik's name for the flag, taken as an alias of it
    flag_note: str = ""  # markdown after the flag in docs/settings.md
    key_note: str = ""  # markdown after the config key in docs/settings.md
    run_only: bool = False  # False: every command takes it (the store and the name are needed)
    # Bounds of an int or seconds setting (None: none); an error out of them names the field
    # with dashes, the minimum with its note, and ends with the hint.
    minimum: float | None = None
    maximum: float | None = None
    minimum_note: str = ""  # what the minimum means, e.g. "off"
    bounds_hint: str = ""  # what to set instead
    # An S3 setting is held in Settings.s3 (crikpy.stores.s3.S3Options), in this field of it,
    # counted in units of s3_unit bytes there (an int declared in MiB is held in bytes).
    s3_option: str | None = None
    s3_unit: int = 1

    @property
    def label(self) -> str:
        """The setting's name in errors: its flag without dashes, else its config key."""
        return self.flag.removeprefix("--") if self.flag else str(self.config_key)

    @property
    def names(self) -> str:
        """Every name it goes by, for an error: `--flag (ENV, configKey)`."""
        first, *rest = [n for n in (self.flag, self.env, self.config_key) if n]
        return f"{first} ({', '.join(rest)})" if rest else first

    def shown(self) -> str:
        """The default as docs/settings.md shows it (markdown)."""
        if self.shown_default is not None:
            return self.shown_default
        value = self.default
        if value is None or value == ():
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, (int, float)):
            return str(int(value)) if float(value).is_integer() else str(value)
        return f"`{value}`"

    def cli_help(self) -> str:
        """The option's --help text: what it does, then its default."""
        return f"{self.help} [default: {self.shown().replace('`', '')}]."

    def readme_row(self) -> str:
        """This setting's line in a short table: flag, env, config key, default."""
        flag = _readme_flag(self) if self.flag else ""
        env = f"`{self.env}`" if self.env else ""
        key = " ".join(part for part in (f"`{self.config_key}`" if self.config_key else "",
                                         self.key_note) if part)
        cells = (flag, env, key, self.shown())
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def _readme_flag(s: Setting) -> str:
    if s.kind == "bool":
        cell = f"`{s.flag}`, `--no-{str(s.flag).removeprefix('--')}`"
    elif s.choices:
        cell = f"`{s.flag} {'|'.join(s.choices)}`".replace("|", r"\|")  # a | would end the cell
    else:
        cell = f"`{s.flag} {s.metavar}`" if s.metavar else f"`{s.flag}`"
    if s.kind == "paths":
        cell += " (repeatable)"
    if s.crik_flag:
        cell += f" (crik's `{s.crik_flag}`)"
    return f"{cell}{s.flag_note}"


# In the order --help and docs/settings.md list them (--help puts run's own after the shared ones).
SETTINGS: tuple[Setting, ...] = (
    Setting("config_file", None, flag="--config", crik_flag="--config-path",
            env="CRIKPY_CONFIG", kind="path", metavar="PATH",
            shown_default=f"`{DEFAULT_CONFIG_PATH}`, else crik's `{CRIK_CONFIG_PATH}` "
                          "(absent is fine)",
            help="YAML config file; --config-path is crik's name for it"),
    Setting("store", DEFAULT_STORE, flag="--store", metavar="URL", env="CRIKPY_STORE",
            config_key="store", key_note="(crik's `imageDir` = `file://` that dir)",
            help="Where checkpoints live: file:///path or s3://bucket/prefix"),
    Setting("name", "", flag="--name", metavar="NAME", env="CRIKPY_NAME", config_key="name",
            shown_default="`$HOSTNAME` (the pod's name, stable for StatefulSet pods)",
            help="The workload's identity in the store"),
    Setting("namespace", None, flag="--namespace", metavar="NS", env="CRIKPY_NAMESPACE",
            config_key="namespace", shown_default="`$POD_NAMESPACE` when set",
            help="Groups names in the store"),
    Setting("on_restore_failure", "cold-start", flag="--on-restore-failure",
            env="CRIKPY_ON_RESTORE_FAILURE", config_key="onRestoreFailure",
            choices=RESTORE_FAILURE_POLICIES, run_only=True,
            help="When a checkpoint cannot be restored (it is quarantined either way): start "
                 "the command cold, or exit 176"),
    Setting("keep_checkpoints", 2, flag="--keep-checkpoints", metavar="N",
            env="CRIKPY_KEEP_CHECKPOINTS", config_key="keepCheckpoints", kind="int",
            run_only=True, minimum=1,
            help="Committed checkpoints kept per workload; older ones are deleted after a "
                 "commit"),
    Setting("work_dir", Path("/var/lib/crikpy/work"), flag="--work-dir", metavar="DIR",
            env="CRIKPY_WORK_DIR", config_key="workDir", kind="path", run_only=True,
            help="Local staging directory for dumps and downloads"),
    Setting("pid_floor", 9000, flag="--pid-floor", metavar="N", env="CRIKPY_PID_FLOOR",
            config_key="pidFloor", kind="int", run_only=True,
            minimum=0, minimum_note="off", maximum=4_000_000,
            help="Workload PIDs start above this, so restores never collide with crikpy's own "
                 "(0: leave ns_last_pid alone)"),
    Setting("ipc_namespace", "own", flag="--ipc-namespace", env="CRIKPY_IPC_NAMESPACE",
            config_key="ipcNamespace", choices=IPC_NAMESPACES, run_only=True,
            help="The IPC namespace a cold start gives the workload (a restore brings back the "
                 "checkpoint's). own: one of its own, which CRIU checkpoints with its SysV "
                 "shared memory, semaphores and message queues (needs CAP_SYS_ADMIN). shared: "
                 "the container's (in Kubernetes, the pod's), for a workload that talks SysV IPC "
                 "to another container; a checkpoint is then refused while the workload holds "
                 "SysV IPC objects"),
    Setting("additional_paths", (), flag="--additional-path", metavar="PATH",
            env="CRIKPY_ADDITIONAL_PATHS", config_key="additionalPaths", kind="paths",
            run_only=True,
            help="A file or directory outside the image that the workload uses; copied into "
                 "each checkpoint and put back before a restore. Repeatable; the variable "
                 "takes space-separated paths"),
    Setting("inotify_incompatible_paths", (), config_key="inotifyIncompatiblePaths",
            kind="paths", key_note="(crik's: deleted before a dump)"),
    Setting("criu_binary", "criu", config_key="criuBinary",
            key_note="(the CRIU program crikpy runs)"),
    Setting("log_level", "info", flag="--log-level", env="CRIKPY_LOG_LEVEL",
            config_key="logLevel", choices=LOG_LEVELS,
            flag_note="; `--debug` (crik's) is `--log-level debug`",
            help="The least severe log events shown; debug adds the settings as resolved"),
    Setting("grace_period", 30.0, flag="--grace-period", metavar="SECONDS",
            env="CRIKPY_GRACE_PERIOD", config_key="gracePeriod", kind="seconds",
            run_only=True, minimum=3,  # 2 s of it are the reserve (deadline.py)
            bounds_hint="set it to the pod's terminationGracePeriodSeconds",
            help="Seconds from SIGTERM to the kubelet's SIGKILL (the pod's "
                 "terminationGracePeriodSeconds). A checkpoint not committed by then, less a "
                 "10% reserve (at least 2 s), is abandoned and the workload shuts down "
                 "normally"),
    # S3: credentials and, when these are unset, endpoint and region come the way every AWS
    # tool finds them (AWS_* variables, shared config files, IRSA, Pod Identity, instance role).
    Setting("s3_endpoint_url", None, s3_option="endpoint_url",
            flag="--s3-endpoint-url", metavar="URL",
            env="CRIKPY_S3_ENDPOINT_URL", config_key="s3EndpointURL",
            shown_default="boto3's (`$AWS_ENDPOINT_URL`, else AWS)",
            help="S3-compatible endpoint (MinIO, Ceph RGW, R2, ...)"),
    Setting("s3_region", None, s3_option="region",
            flag="--s3-region", metavar="REGION", env="CRIKPY_S3_REGION",
            config_key="s3Region",
            shown_default="boto3's (`$AWS_REGION`, `$AWS_DEFAULT_REGION`, AWS config file)",
            help="The bucket's region"),
    Setting("s3_path_style", False, s3_option="path_style",
            flag="--s3-path-style", env="CRIKPY_S3_PATH_STYLE",
            config_key="s3PathStyle", kind="bool",
            help="Path-style addressing, which most S3-compatible servers need"),
    Setting("s3_part_size_mib", 8, s3_option="part_size", s3_unit=MIB,
            flag="--s3-part-size", metavar="MIB",
            env="CRIKPY_S3_PART_SIZE", config_key="s3PartSizeMiB", kind="int",
            minimum=5, maximum=5120,  # S3 takes parts of 5 MiB to 5 GiB
            help="Multipart part size in MiB, at least 5"),
    Setting("s3_concurrency", 4, s3_option="concurrency",
            flag="--s3-concurrency", metavar="N",
            env="CRIKPY_S3_CONCURRENCY", config_key="s3Concurrency", kind="int",
            minimum=1, maximum=64,
            help="Parts held in memory at once, across all transfers: crikpy's transfers hold "
                 "at most part size x this"),
    Setting("s3_sse", None, s3_option="sse",
            flag="--s3-sse", env="CRIKPY_S3_SSE", config_key="s3SSE",
            choices=S3_SSE, help="Server-side encryption: SSE-S3 or SSE-KMS"),
    Setting("s3_sse_kms_key_id", None, s3_option="sse_kms_key_id",
            flag="--s3-sse-kms-key-id", metavar="ID",
            env="CRIKPY_S3_SSE_KMS_KEY_ID", config_key="s3SSEKMSKeyId",
            shown_default="the bucket's", help="KMS key for --s3-sse aws:kms"),
    Setting("s3_storage_class", None, s3_option="storage_class",
            flag="--s3-storage-class", metavar="CLASS",
            env="CRIKPY_S3_STORAGE_CLASS", config_key="s3StorageClass",
            shown_default="the server's (`STANDARD` on AWS)",
            help="Storage class of checkpoint objects, e.g. STANDARD, INTELLIGENT_TIERING"),
    Setting("s3_credentials_file", None, s3_option="credentials_file",
            flag="--s3-credentials-file", metavar="PATH",
            env="CRIKPY_S3_CREDENTIALS_FILE", config_key="s3CredentialsFile",
            shown_default="boto3's own search",
            help="An AWS credentials file only crikpy reads (a mounted Secret), so that the "
                 "workload does not inherit the keys, which would then be in every checkpoint; "
                 "IRSA and Pod Identity also keep them out"),
    Setting("encryption_key_file", None, flag="--encryption-key-file", metavar="PATH",
            env="CRIKPY_ENCRYPTION_KEY_FILE", config_key="encryptionKeyFile",
            shown_default="none (checkpoints are stored in the clear)",
            help="A file (a mounted Secret) of base64-encoded 32-byte keys, one per line: "
                 "checkpoints are sealed with the first (AES-256-GCM) and opened with any, and "
                 "only checkpoints that authenticate are restored"),
    Setting("redact_command", False, flag="--redact-command", env="CRIKPY_REDACT_COMMAND",
            config_key="redactCommand", kind="bool", run_only=True,
            shown_default="off (the command is recorded)",
            help="Leave the workload's command line out of checkpoint manifests (it may hold "
                 "secrets); a restore then cannot say whether the command changed"),
    Setting("compression", "zstd", flag="--compression", env="CRIKPY_COMPRESSION",
            config_key="compression", choices=COMPRESSION, run_only=True,
            help="Compress memory pages on their way to the store, 1 MiB at a time; a MiB that "
                 "does not shrink is stored as it is, so memory that does not compress costs "
                 "little"),
    Setting("checkpoint_on", "always", flag="--checkpoint-on", env="CRIKPY_CHECKPOINT_ON",
            config_key="checkpointOn", choices=CHECKPOINT_ON, run_only=True,
            shown_default="`always`; `node-shutdown` when crik's `nodeStateServerURL` is set",
            help="What a SIGTERM means. always: checkpoint. node-shutdown: checkpoint only when "
                 "a node-state source says the node is leaving (else shut down normally and "
                 "clear the latest checkpoint, as on a rollout). never: plain init"),
    Setting("node_state_sources", (), flag="--node-state-sources", metavar="LIST",
            env="CRIKPY_NODE_STATE_SOURCES", config_key="nodeStateSources", kind="names",
            run_only=True,
            shown_default="`kubernetes` when in-cluster, `crik` when its URL is set",
            help="Comma-separated, tried in order: " + ", ".join(NODE_STATE_SOURCES) + ". "
                 "Cloud sources are also polled for interruption notices"),
    Setting("node_state_timeout", 3.0, flag="--node-state-timeout", metavar="SECONDS",
            env="CRIKPY_NODE_STATE_TIMEOUT", config_key="nodeStateTimeout", kind="seconds",
            run_only=True,
            help="Seconds to wait for the sources' answer on SIGTERM; no answer means "
                 "'not leaving'"),
    Setting("node_name", None, flag="--node-name", metavar="NODE", env="CRIKPY_NODE_NAME",
            config_key="nodeName", run_only=True,
            shown_default="`$KUBERNETES_NODE_NAME` or `$NODE_NAME`", help="This pod's node"),
    Setting("kubernetes_api_url", None, flag="--kubernetes-api-url", metavar="URL",
            env="CRIKPY_KUBERNETES_API_URL", config_key="kubernetesAPIURL", run_only=True,
            shown_default="in-cluster: "
                          "`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`",
            help="The Kubernetes API server, asked whether the node is leaving and told the "
                 "pod's events"),
    Setting("node_state_server_url", None, config_key="nodeStateServerURL",
            key_note="(crik's node-state server)"),
    Setting("aws_imds_url", "http://169.254.169.254", flag="--aws-imds-url", metavar="URL",
            env="CRIKPY_AWS_IMDS_URL", config_key="awsIMDSURL", run_only=True,
            help="AWS's instance metadata service, for the aws source"),
    Setting("gcp_metadata_url", "http://metadata.google.internal", flag="--gcp-metadata-url",
            metavar="URL", env="CRIKPY_GCP_METADATA_URL", config_key="gcpMetadataURL",
            run_only=True, help="GCP's metadata server, for the gcp source"),
    Setting("azure_metadata_url", "http://169.254.169.254", flag="--azure-metadata-url",
            metavar="URL", env="CRIKPY_AZURE_METADATA_URL", config_key="azureMetadataURL",
            run_only=True, help="Azure's instance metadata service, for the azure source"),
    Setting("notice_poll_interval", 5.0, flag="--notice-poll-interval", metavar="SECONDS",
            env="CRIKPY_NOTICE_POLL_INTERVAL", config_key="noticePollInterval", kind="seconds",
            run_only=True,
            help="Seconds between polls of the cloud sources for an interruption notice; on "
                 "one, crikpy checkpoints at once and stops the workload"),
    Setting("checkpoint_interval", None, flag="--checkpoint-interval", metavar="DURATION",
            env="CRIKPY_CHECKPOINT_INTERVAL", config_key="checkpointInterval", kind="duration",
            run_only=True, shown_default="off",
            help="Also checkpoint every DURATION (e.g. 10m) with the workload left running, "
                 "for nodes that vanish without notice; a restore then rewinds the workload to "
                 "that moment"),
    Setting("after_failed_checkpoint", "clear", flag="--after-failed-checkpoint",
            env="CRIKPY_AFTER_FAILED_CHECKPOINT", config_key="afterFailedCheckpoint",
            choices=AFTER_FAILED_CHECKPOINT, run_only=True,
            help="When a checkpoint failed and the workload then shut down on its SIGTERM, the "
                 "previous checkpoint is older than the state it shut down from. clear: the "
                 "next start is cold, as without crikpy. keep: the next start restores the "
                 "previous checkpoint, rewinding the workload"),
    Setting("restore_attempts", 3, flag="--restore-attempts", metavar="N",
            env="CRIKPY_RESTORE_ATTEMPTS", config_key="restoreAttempts", kind="int",
            run_only=True, minimum=1, maximum=MAX_RESTORE_ATTEMPTS,
            help="Restores of one checkpoint that may fail (the pod exits and restarts between "
                 "them) before it is quarantined and the previous one is tried"),
    Setting("on_new_version", "cold-start", flag="--on-new-version",
            env="CRIKPY_ON_NEW_VERSION", config_key="onNewVersion", choices=ON_NEW_VERSION,
            run_only=True,
            help="When the latest checkpoint was taken from another version of the workload (its "
                 "image's files, the executables and libraries it maps, its command, its "
                 "environment or the pod's revision differ). cold-start: start the new version, "
                 "keeping the checkpoint aside. restore: restore the old process anyway"),
    Setting("version_ignore_env", (), flag="--version-ignore-env", metavar="NAMES",
            env="CRIKPY_VERSION_IGNORE_ENV", config_key="versionIgnoreEnv", kind="names",
            run_only=True,
            help="Environment variables that differ between pods of one version, besides those "
                 "crikpy knows (the pod's name, UID and IPs, HOSTNAME, Kubernetes service "
                 "links): a difference in them is not a new version"),
    Setting("pod_revision", None, flag="--pod-revision", metavar="REVISION",
            env="CRIKPY_POD_REVISION", config_key="podRevision", run_only=True,
            shown_default="none (the kustomize component sets it from the pod's labels)",
            help="The pod template's revision (controller-revision-hash, pod-template-hash): a "
                 "checkpoint of another revision is another version"),
    Setting("outside_tree", "warn", flag="--outside-tree", env="CRIKPY_OUTSIDE_TREE",
            config_key="outsideTree", choices=OUTSIDE_TREE, run_only=True,
            help="Processes of the container outside the workload's tree (a daemon it "
                 "double-forked away) are not in a checkpoint. warn: name them and checkpoint "
                 "the tree. refuse: refuse the checkpoint, so the workload shuts down as "
                 "without crikpy"),
    Setting("max_container_files", 1_000_000, flag="--max-container-files", metavar="N",
            env="CRIKPY_MAX_CONTAINER_FILES", config_key="maxContainerFiles", kind="int",
            run_only=True, minimum=1,
            help="The most entries crikpy lists in the container's own filesystem to find the "
                 "workload's changes (about 1 s per 250,000 at start and at each dump); past it, "
                 "checkpoints are refused"),
    Setting("max_changed_mib", 2048, flag="--max-changed-mib", metavar="MIB",
            env="CRIKPY_MAX_CHANGED_MIB", config_key="maxChangedMiB", kind="int", run_only=True,
            minimum=1,
            help="The most MiB of the container's files (changed since it started, /dev/shm, "
                 "emptyDir volumes) a checkpoint carries; past it, the checkpoint is refused"),
    Setting("ghost_limit_mib", 512, flag="--ghost-limit-mib", metavar="MIB",
            env="CRIKPY_GHOST_LIMIT_MIB", config_key="ghostLimitMiB", kind="int", run_only=True,
            minimum=1,
            help="The largest deleted-but-open file (CRIU's ghost file) a checkpoint carries; "
                 "CRIU writes each whole into the work dir beside its images, so the work dir "
                 "needs room for them. A larger one fails the dump"),
    Setting("notice_wait", None, flag="--notice-wait", metavar="DURATION",
            env="CRIKPY_NOTICE_WAIT", config_key="noticeWait", kind="duration", run_only=True,
            shown_default="the cloud's lead time + the grace period",
            help="After a notice checkpoint, how long to wait for SIGTERM before exiting "
                 "anyway (the node stayed), so that the container restarts and restores"),
)

BY_FIELD = {s.field: s for s in SETTINGS}


def default(field: str) -> Any:
    """A declared setting's default, for the Settings dataclass."""
    return BY_FIELD[field].default


def readme_table() -> str:
    """A short settings table, in markdown (docs/settings.md adds what each does)."""
    rows = ["| flag | env | config key | default |", "|---|---|---|---|"]
    return "\n".join([*rows, *(s.readme_row() for s in SETTINGS)])


if __name__ == "__main__":
    print(readme_table())
